// statfs() and struct statfs with f_type, used to tell a DRAM-backed NVM file; and
// getxattr/setxattr/listxattr/removexattr.
#include <sys/vfs.h>
#include <sys/xattr.h>
