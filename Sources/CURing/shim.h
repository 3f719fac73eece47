// <features.h> and <signal.h> come first so that importing liburing beside another C module
// does not give Clang two definitions of fd_set (see shared/notes/interop.md).
#include <features.h>
#include <signal.h>
// The kernel's <linux/io_uring.h> comes before <liburing.h> so that liburing's bundled copy
// (same include guard, LINUX_IO_URING_H) is skipped: swift-system's CSystem module includes
// the kernel header, and Clang rejects a module that sees two different definitions of
// struct io_uring_sqe (rw_flags is __u32 in one, __kernel_rwf_t in the other). The layouts
// are identical, so liburing's compiled code is unaffected.
#include <linux/io_uring.h>
#include <liburing.h>
