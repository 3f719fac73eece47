// statfs() and struct statfs with f_type, used to tell a DRAM-backed NVM file; and
// getxattr/setxattr/listxattr/removexattr.
#include <sys/vfs.h>
#include <sys/xattr.h>

// A cache hint Swift has no spelling for: fetch the line at `address` for writing, so that
// a store to it later does not wait behind a miss (LibFS's pending data index).
static inline void shale_prefetch_for_write(const void *address) {
    __builtin_prefetch(address, 1, 3);
}
