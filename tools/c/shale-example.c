/* A C program on libshale (include/shale.h): attaches the volume named on the command line,
 * makes a small tree, reads it back, checks errno on bad calls, and detaches. It stops with
 * a message and exit status 1 at the first call that does not do what POSIX says.
 *
 *   cc -I include tools/c/shale-example.c -L BIN -lLibShale -Wl,-rpath,BIN -o shale-example
 *   ./shale-example VOLUME_DIR
 *
 * (BIN: `swift build --show-bin-path`; the Swift runtime's directory may be needed in the
 * rpath too, e.g. /opt/swift/usr/lib/swift/linux.) Afterwards the volume holds /c/hello.txt
 * (13 bytes: "hello" and 8 zeros, after a truncate down and up; mode 0600), /c/big (1 MiB + 1 of a known pattern, with a hole), /c/link -> hello.txt and
 * /c/hard (a second name of hello.txt); /c/gone is created and removed.
 */
#define _GNU_SOURCE /* SEEK_DATA, SEEK_HOLE */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

    CHECK(shale_detach() == 0, "detach");
    FAILS_WITH(shale_detach(), ENXIO);
    printf("shale-example: every call did what POSIX says\n");
    return failures;
}
