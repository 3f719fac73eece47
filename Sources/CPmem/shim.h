// Only what Shale's media layer calls: the libpmem API.
#include <libpmem.h>
