// <features.h> and <signal.h> come first so that importing liburing beside another C module
// does not give Clang two definitions of fd_set (see shared/notes/interop.md).
#include <features.h>
#include <signal.h>
#include <liburing.h>
