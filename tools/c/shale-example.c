/* A C program on libshale (include/shale.h): attaches the volume named on the command line,
 * makes a small tree, reads it back, checks errno on bad calls, and detaches. It stops with
 * a message and exit status 1 at the first call that does not do what POSIX says.
 *
 *   cc -I include tools/c/shale-example.c -L BIN -lLibShale -Wl,-rpath,BIN -o shale-example
 *   ./shale-example VOLUME_DIR
 *
 * (BIN: `swift build --show-bin-path`; the Swift runtime's directory may be needed in the
 * rpath too, e.g. /opt/swift/usr/lib/swift/linux.) Afterwards the volume holds /c/hello.txt
 * (13 bytes: "hello" and 8 zeros, after a truncate down and up; mode 0600, owner 1000:1000,
 * mtime 1234567890.5, xattr user.colour = "blue"), /c/big (2 MiB + 1: a known 1 MiB pattern
 * at 64 KiB with its first 4 KiB punched out, a hole before it; mode 0640, owner 2000:2000,
 * mtime 1000000000), /c/link -> hello.txt (owner 3000:3000) and /c/hard (a second name of
 * hello.txt); /c/gone is created and removed.
 */
#define _GNU_SOURCE /* SEEK_DATA, SEEK_HOLE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <dirent.h>
#include <linux/falloc.h>
#include <sys/xattr.h>

#include "shale.h"

static int failures = 0;

#define CHECK(condition, ...) do { \
        if (!(condition)) { \
            fprintf(stderr, "shale-example: line %d: ", __LINE__); \
            fprintf(stderr, __VA_ARGS__); \
            fprintf(stderr, " (errno %d: %s)\n", errno, strerror(errno)); \
            exit(1); \
        } \
    } while (0)

/* A call that must fail with `expected`. */
#define FAILS_WITH(call, expected) do { \
        errno = 0; \
        long result_ = (long)(call); \
        CHECK(result_ == -1 && errno == (expected), "%s gave %ld, errno %d; wanted -1, errno %d (%s)", \
              #call, result_, errno, (expected), strerror(expected)); \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: shale-example VOLUME_DIR\n");
        return 2;
    }
    FAILS_WITH(shale_open("/c", O_RDONLY, 0), ENXIO);
    if (shale_attach(argv[1]) != 0) {
        fprintf(stderr, "shale-example: attach %s: %s (%s)\n", argv[1], strerror(errno), shale_attach_error());
        return 1;
    }
    FAILS_WITH(shale_attach(argv[1]), EALREADY);

    CHECK(shale_mkdir("/c", 0755) == 0, "mkdir /c");
    FAILS_WITH(shale_mkdir("/c", 0755), EEXIST);
    int fd = shale_open("/c/hello.txt", O_CREAT | O_EXCL | O_RDWR, 0644);
    CHECK(fd >= 0, "create /c/hello.txt");
    FAILS_WITH(shale_open("/c/hello.txt", O_CREAT | O_EXCL | O_RDWR, 0644), EEXIST);
    CHECK(shale_write(fd, "hello, shale\n", 13) == 13, "write");
    CHECK(shale_lseek(fd, 0, SEEK_SET) == 0, "lseek");
    char buffer[64] = {0};
    CHECK(shale_read(fd, buffer, sizeof buffer) == 13 && memcmp(buffer, "hello, shale\n", 13) == 0, "read back");
    CHECK(shale_pread(fd, buffer, 5, 7) == 5 && memcmp(buffer, "shale", 5) == 0, "pread");
    CHECK(shale_fsync(fd) == 0, "fsync");
    struct stat status;
    CHECK(shale_fstat(fd, &status) == 0 && status.st_size == 13 && S_ISREG(status.st_mode)
          && (status.st_mode & 07777) == 0644 && status.st_nlink == 1, "fstat");
    CHECK(shale_close(fd) == 0, "close");
    FAILS_WITH(shale_close(fd), EBADF);
    FAILS_WITH(shale_read(fd, buffer, 1), EBADF);

    /* A big file with a hole: 1 MiB of pattern at 64 KiB, one byte at 2 MiB. */
    size_t count = 1 << 20;
    unsigned char *pattern = malloc(count);
    for (size_t i = 0; i < count; i++) pattern[i] = (unsigned char)(i * 131 + 7);
    fd = shale_open("/c/big", O_CREAT | O_WRONLY | O_TRUNC, 0600);
    CHECK(fd >= 0, "create /c/big");
    CHECK(shale_pwrite(fd, pattern, count, 65536) == (ssize_t)count, "pwrite 1 MiB");
    CHECK(shale_pwrite(fd, "z", 1, 2 << 20) == 1, "pwrite past the end");
    CHECK(shale_lseek(fd, 0, SEEK_DATA) == 65536, "SEEK_DATA");
    CHECK(shale_lseek(fd, 65536, SEEK_HOLE) >= 65536 + (off_t)count, "SEEK_HOLE");
    CHECK(shale_close(fd) == 0, "close big");
    fd = shale_open("/c/big", O_RDONLY, 0);
    unsigned char *back = malloc(count);
    CHECK(shale_pread(fd, back, count, 65536) == (ssize_t)count && memcmp(back, pattern, count) == 0, "read 1 MiB back");
    CHECK(shale_pread(fd, back, 16, 0) == 16, "read the hole");
    for (int i = 0; i < 16; i++) CHECK(back[i] == 0, "the hole reads zeros");
    FAILS_WITH(shale_write(fd, "x", 1), EBADF);
    CHECK(shale_close(fd) == 0, "close big again");
    free(pattern);
    free(back);

    /* Names. */
    CHECK(shale_symlink("hello.txt", "/c/link") == 0, "symlink");
    char target[64];
    CHECK(shale_readlink("/c/link", target, sizeof target) == 9 && memcmp(target, "hello.txt", 9) == 0, "readlink");
    CHECK(shale_stat("/c/link", &status) == 0 && S_ISREG(status.st_mode) && status.st_size == 13, "stat follows the link");
    CHECK(shale_lstat("/c/link", &status) == 0 && S_ISLNK(status.st_mode), "lstat");
    CHECK(shale_link("/c/hello.txt", "/c/hard") == 0, "link");
    CHECK(shale_stat("/c/hard", &status) == 0 && status.st_nlink == 2, "two links");
    fd = shale_open("/c/gone", O_CREAT | O_WRONLY, 0644);
    CHECK(fd >= 0 && shale_close(fd) == 0, "create /c/gone");
    CHECK(shale_rename("/c/gone", "/c/gone2") == 0, "rename");
    FAILS_WITH(shale_stat("/c/gone", &status), ENOENT);
    CHECK(shale_unlink("/c/gone2") == 0, "unlink");
    FAILS_WITH(shale_unlink("/c/gone2"), ENOENT);
    FAILS_WITH(shale_rmdir("/c"), ENOTEMPTY);
    FAILS_WITH(shale_open("/c/hello.txt/x", O_RDONLY, 0), ENOTDIR);
    FAILS_WITH(shale_open("/c", O_WRONLY, 0), EISDIR);
    FAILS_WITH(shale_open("/c/hello.txt", O_RDONLY | O_DIRECTORY, 0), ENOTDIR);
    FAILS_WITH(shale_open(NULL, O_RDONLY, 0), EFAULT);
    FAILS_WITH(shale_open("/c/hello.txt", O_RDONLY | O_ASYNC, 0), EINVAL);
    char longName[300];
    memset(longName, 'n', sizeof longName);
    longName[0] = '/';
    longName[sizeof longName - 1] = 0;
    FAILS_WITH(shale_mkdir(longName, 0755), ENAMETOOLONG);
    CHECK(shale_chmod("/c/hello.txt", 0600) == 0 && shale_stat("/c/hello.txt", &status) == 0
          && (status.st_mode & 07777) == 0600, "chmod");
    CHECK(shale_truncate("/c/hard", 5) == 0 && shale_stat("/c/hello.txt", &status) == 0 && status.st_size == 5, "truncate");
    CHECK(shale_truncate("/c/hard", 13) == 0, "truncate back");

    /* Extended attributes. */
    CHECK(shale_setxattr("/c/hello.txt", "user.colour", "blue", 4, XATTR_CREATE) == 0, "setxattr");
    FAILS_WITH(shale_setxattr("/c/hello.txt", "user.colour", "red", 3, XATTR_CREATE), EEXIST);
    FAILS_WITH(shale_setxattr("/c/hello.txt", "user.shape", "round", 5, XATTR_REPLACE), ENODATA);
    CHECK(shale_getxattr("/c/hello.txt", "user.colour", NULL, 0) == 4, "getxattr size");
    FAILS_WITH(shale_getxattr("/c/hello.txt", "user.colour", buffer, 2), ERANGE);
    CHECK(shale_getxattr("/c/hello.txt", "user.colour", buffer, sizeof buffer) == 4 && memcmp(buffer, "blue", 4) == 0, "getxattr");
    CHECK(shale_setxattr("/c/hello.txt", "user.shape", "round", 5, 0) == 0, "setxattr 2");
    CHECK(shale_removexattr("/c/hello.txt", "user.shape") == 0, "removexattr");
    FAILS_WITH(shale_getxattr("/c/hello.txt", "user.shape", buffer, sizeof buffer), ENODATA);
    CHECK(shale_listxattr("/c/hello.txt", buffer, sizeof buffer) == 12 && memcmp(buffer, "user.colour", 12) == 0, "listxattr");

    /* fallocate: a hole punched into /c/big reads as zeros, the size stays. */
    fd = shale_open("/c/big", O_RDWR, 0);
    CHECK(shale_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536, 4096) == 0, "punch a hole");
    FAILS_WITH(shale_fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
    CHECK(shale_fstat(fd, &status) == 0 && status.st_size == (2 << 20) + 1, "size kept");
    CHECK(shale_close(fd) == 0, "close after fallocate");

    CHECK(shale_chown("/c/hard", 1000, 1000) == 0 && shale_stat("/c/hello.txt", &status) == 0
          && status.st_uid == 1000 && status.st_gid == 1000, "chown");

    /* The calls through a descriptor, lchown, times, access, statvfs. */
    fd = shale_open("/c/big", O_RDWR, 0);
    CHECK(shale_fchmod(fd, 0640) == 0 && shale_fchown(fd, 2000, 2000) == 0 && shale_fstat(fd, &status) == 0
          && (status.st_mode & 07777) == 0640 && status.st_uid == 2000 && status.st_gid == 2000, "fchmod, fchown");
    struct timespec times[2] = { { .tv_sec = 0, .tv_nsec = UTIME_OMIT }, { .tv_sec = 1000000000, .tv_nsec = 0 } };
    struct stat before;
    CHECK(shale_fstat(fd, &before) == 0 && shale_futimens(fd, times) == 0 && shale_fstat(fd, &status) == 0
          && status.st_mtim.tv_sec == 1000000000 && status.st_atim.tv_sec == before.st_atim.tv_sec, "futimens (atime omitted)");
    times[1].tv_nsec = 1000000000;
    FAILS_WITH(shale_futimens(fd, times), EINVAL);
    CHECK(shale_close(fd) == 0, "close big after futimens");
    FAILS_WITH(shale_fchmod(fd, 0600), EBADF);
    struct timespec stamp[2] = { { .tv_sec = 1234567890, .tv_nsec = 500000000 }, { .tv_sec = 1234567890, .tv_nsec = 500000000 } };
    CHECK(shale_utimens("/c/link", stamp, 0) == 0 && shale_stat("/c/hello.txt", &status) == 0
          && status.st_mtim.tv_sec == 1234567890 && status.st_mtim.tv_nsec == 500000000, "utimens follows the link");
    CHECK(shale_utimens("/c/link", NULL, AT_SYMLINK_NOFOLLOW) == 0 && shale_lstat("/c/link", &status) == 0
          && status.st_mtim.tv_sec > 1234567890, "utimens of the link itself, now");
    FAILS_WITH(shale_utimens("/c/link", NULL, 0x1000), EINVAL);
    CHECK(shale_lchown("/c/link", 3000, 3000) == 0 && shale_lstat("/c/link", &status) == 0 && status.st_uid == 3000
          && shale_stat("/c/link", &status) == 0 && status.st_uid == 1000, "lchown changes the link, not its target");
    CHECK(shale_access("/c/hello.txt", R_OK | W_OK) == 0 && shale_access("/c", X_OK) == 0, "access");
    FAILS_WITH(shale_access("/c/none", F_OK), ENOENT);
    FAILS_WITH(shale_access("/c/hello.txt", 8), EINVAL);
    struct statvfs volume;
    CHECK(shale_statvfs("/c", &volume) == 0 && volume.f_bsize == 4096 && volume.f_blocks > volume.f_bfree
          && volume.f_bfree > 0 && volume.f_files > volume.f_ffree && volume.f_namemax == 255, "statvfs");
    FAILS_WITH(shale_statvfs("/c/none", &volume), ENOENT);
    FAILS_WITH(shale_fstatvfs(99, &volume), EBADF);

    /* Directory streams: big, hard, hello.txt, link (gone2 was removed). */
    SHALE_DIR *directory = shale_opendir("/c");
    CHECK(directory != NULL, "opendir");
    int seen = 0, sawLink = 0;
    struct dirent *entry;
    errno = 0;
    while ((entry = shale_readdir(directory)) != NULL) {
        seen++;
        if (strcmp(entry->d_name, "link") == 0) sawLink = entry->d_type == DT_LNK;
        CHECK(strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0, "no dot entries");
    }
    CHECK(errno == 0 && seen == 4 && sawLink, "readdir saw %d entries", seen);
    CHECK(shale_closedir(directory) == 0, "closedir");
    errno = 0;
    CHECK(shale_opendir("/c/hello.txt") == NULL && errno == ENOTDIR, "opendir of a file");

    CHECK(shale_detach() == 0, "detach");
    FAILS_WITH(shale_detach(), ENXIO);
    printf("shale-example: every call did what POSIX says\n");
    return failures;
}
