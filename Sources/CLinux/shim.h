// statfs() and struct statfs with f_type, used to tell a DRAM-backed NVM file.
#include <sys/vfs.h>
