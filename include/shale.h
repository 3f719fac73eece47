/* libshale: Shale's file API for C programs, linked into the process (LibFS).
 *
 * Every call mirrors its POSIX namesake: same arguments, same results, -1 with errno set on
 * failure. Paths are absolute within the Shale volume ("/dir/file"), not the host's.
 * Every call that changes the file system is durable when it returns (the operation is in
 * the process's own log on NVM); shale_fsync is accepted and costs nothing.
 *
 * Today the library runs the volume in-process (embedded mode: an exclusive lock on the
 * volume, recovery at shale_attach); a volume that `shale mount` serves is in use (EBUSY).
 * Attaching beside a running mount comes with Shale's issue 6.
 *
 * Build: swift build (libLibShale.so in the build's bin path; `make install` installs it as
 * libshale.so with this header). Thread-safe: calls may come from any thread.
 */
#ifndef SHALE_H
#define SHALE_H

#include <dirent.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Opens the volume at `volume` (its directory or manifest, as `shale mkfs` made it) for this
 * process: recovers it and attaches a log. One volume per process; a second attach without a
 * detach fails with EALREADY. Errors: EBUSY (in use by another process or a mount), ENOENT,
 * EINVAL (not a Shale volume, or damaged), EPROTO (a format version this build cannot read),
 * EIO; shale_attach_error() says what happened in words. */
int shale_attach(const char *volume);
/* Digests the log, closes every open descriptor and the volume. */
int shale_detach(void);
/* Why the last shale_attach failed (a static string until the next attach); "" if it did not. */
const char *shale_attach_error(void);

/* The calls below fail with ENXIO before shale_attach. flags: O_RDONLY, O_WRONLY, O_RDWR,
 * O_CREAT, O_EXCL, O_TRUNC, O_APPEND, O_DIRECTORY, O_NOFOLLOW (others: EINVAL). Unlike
 * open(2), `mode` is not variadic: pass it always (ignored without O_CREAT). */
int shale_open(const char *path, int flags, mode_t mode);
int shale_close(int fd);
ssize_t shale_read(int fd, void *buffer, size_t count);
/* shale_write and shale_pwrite write all `count` bytes unless an error stops them (then
 * what was written, or -1 if nothing was). A write longer than one log record (1 MiB on
 * default volumes) is logged as several, each durable when it is logged: a crash during it
 * keeps a prefix, as a crash does during a long write through the mount. */
ssize_t shale_write(int fd, const void *buffer, size_t count);
ssize_t shale_pread(int fd, void *buffer, size_t count, off_t offset);
ssize_t shale_pwrite(int fd, const void *buffer, size_t count, off_t offset);
/* whence: SEEK_SET, SEEK_CUR, SEEK_END, SEEK_DATA, SEEK_HOLE. */
off_t shale_lseek(int fd, off_t offset, int whence);
int shale_fsync(int fd);
int shale_ftruncate(int fd, off_t length);
int shale_truncate(const char *path, off_t length);
int shale_fstat(int fd, struct stat *status);
int shale_stat(const char *path, struct stat *status);
int shale_lstat(const char *path, struct stat *status);
int shale_mkdir(const char *path, mode_t mode);
int shale_rmdir(const char *path);
int shale_unlink(const char *path);
int shale_rename(const char *from, const char *to);
int shale_link(const char *existing, const char *path);
int shale_symlink(const char *target, const char *path);
/* Like readlink(2): no terminating NUL; the length, at most `size`. */
ssize_t shale_readlink(const char *path, char *buffer, size_t size);
int shale_chmod(const char *path, mode_t mode);
int shale_chown(const char *path, uid_t uid, gid_t gid);
int shale_lchown(const char *path, uid_t uid, gid_t gid);
int shale_fchmod(int fd, mode_t mode);
int shale_fchown(int fd, uid_t uid, gid_t gid);
/* mode: F_OK, or R_OK | W_OK | X_OK, checked against the caller's real ids as access(2). */
int shale_access(const char *path, int mode);
/* As utimensat(AT_FDCWD, path, times, flags) and futimens(2): times NULL sets both to now,
 * tv_nsec UTIME_NOW or UTIME_OMIT as there; flags 0 or AT_SYMLINK_NOFOLLOW. */
int shale_utimens(const char *path, const struct timespec times[2], int flags);
int shale_futimens(int fd, const struct timespec times[2]);
/* As statvfs(3)/fstatvfs(3): the volume's real totals (NVM blocks and inodes). */
int shale_statvfs(const char *path, struct statvfs *result);
int shale_fstatvfs(int fd, struct statvfs *result);
/* mode: 0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE. */
int shale_fallocate(int fd, int mode, off_t offset, off_t length);

/* Extended attributes, as getxattr(2) and friends (they follow symlinks): a size of 0 asks
 * for the length, a buffer too small is ERANGE; flags XATTR_CREATE, XATTR_REPLACE. */
ssize_t shale_getxattr(const char *path, const char *name, void *value, size_t size);
int shale_setxattr(const char *path, const char *name, const void *value, size_t size, int flags);
ssize_t shale_listxattr(const char *path, char *list, size_t size);
int shale_removexattr(const char *path, const char *name);

/* Directory streams, as opendir(3)/readdir(3)/closedir(3): "." and ".." are not listed; the
 * entries are those at shale_opendir; the dirent is overwritten by the next shale_readdir of
 * the same stream; NULL with errno unchanged at the end. */
typedef struct shale_dir SHALE_DIR;
SHALE_DIR *shale_opendir(const char *path);
struct dirent *shale_readdir(SHALE_DIR *directory);
int shale_closedir(SHALE_DIR *directory);

#ifdef __cplusplus
}
#endif

#endif
