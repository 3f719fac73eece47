// Only what the FUSE front end calls: libfuse3's low-level API at API version 3.12. A module
// map cannot pass -D, so the version is defined here, before the header reads it.
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
// The kernel's wire layouts, for the INIT flags libfuse 3.14 cannot set (ShaleFUSE/InitReply.swift).
#include <linux/fuse.h>
