// swift-tools-version:6.0
// Shale: a cross-media file system. Targets follow the layers of docs/architecture.md,
// bottom to top; a module imports only the ones below it.
import PackageDescription

// Release builds of the hot layers drop Swift's dynamic exclusivity checks (every access to
// a class's stored property otherwise records itself in a thread-local access set: ~15 % of a
// durable 4 KiB write in profiles). Debug builds, which every test runs, keep them.
let hotPathSettings: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "Shale",
    products: [
        .executable(name: "shale", targets: ["shale"]),
        .library(name: "ShaleMedia", targets: ["ShaleMedia"]),
        .library(name: "ShaleFormat", targets: ["ShaleFormat"]),
        .library(name: "LibFS", targets: ["LibFS"]),
        .library(name: "KernFS", targets: ["KernFS"]),
        .library(name: "ShaleFUSE", targets: ["ShaleFUSE"]),
        .library(name: "CrashTest", targets: ["CrashTest"]),
        // libshale for C programs (include/shale.h); `make install` installs it as libshale.so.
        .library(name: "LibShale", type: .dynamic, targets: ["LibShale"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
    ],
    targets: [
        // C shims. Each exists for one reason, written in its module map or header.
        .systemLibrary(name: "CPmem", pkgConfig: "libpmem",
                       providers: [.apt(["libpmem-dev"])]),
        .systemLibrary(name: "CURing", pkgConfig: "liburing",
                       providers: [.apt(["liburing-dev"])]),
        .systemLibrary(name: "CFuse", pkgConfig: "fuse3",
                       providers: [.apt(["libfuse3-dev"])]),
        .systemLibrary(name: "CLinux"),
        .target(name: "CCRC32C"),

        // Layer 1: media, the only code that touches storage.
        .target(name: "ShaleMedia",
                dependencies: ["CPmem", "CURing", "CLinux", "CCRC32C",
                               .product(name: "SystemPackage", package: "swift-system")],
                // The crash harness's planted bugs exist in debug (test) builds only (PlantedBugs.swift).
                swiftSettings: [.define("SHALE_PLANTED_BUGS", .when(configuration: .debug))]),
        // Layer 2: the on-media format, shared by every writer and reader.
        .target(name: "ShaleFormat", dependencies: ["CCRC32C"]),
        // Layer 3: the per-process operation log and the POSIX-shaped API.
        .target(name: "LibFS", dependencies: ["ShaleMedia", "ShaleFormat",
                                             .product(name: "SystemPackage", package: "swift-system")],
                swiftSettings: hotPathSettings),
        // Layer 4 (kernel role): owns the shared area; today formatting and opening a volume.
        .target(name: "KernFS", dependencies: ["LibFS", "ShaleMedia", "ShaleFormat"], swiftSettings: hotPathSettings),
        // Layer 6: front ends. The FUSE daemon, a LibFS client of KernFS in the same process.
        .target(name: "ShaleFUSE", dependencies: ["CFuse", "KernFS", "LibFS", "ShaleFormat",
                                                 .product(name: "SystemPackage", package: "swift-system")]),
        // Layer 6: the crash-consistency harness (issue 5), the production code on recording media.
        .target(name: "CrashTest", dependencies: ["KernFS", "LibFS", "ShaleFormat", "ShaleMedia",
                                                  .product(name: "SystemPackage", package: "swift-system")]),
        // Layer 6: the C library (include/shale.h), LibFS for programs that link it.
        .target(name: "LibShale", dependencies: ["KernFS", "LibFS", "ShaleFormat",
                                                 .product(name: "SystemPackage", package: "swift-system")]),
        // Tools: the one CLI.
        .executableTarget(name: "shale",
                          dependencies: ["KernFS", "ShaleFUSE", "CrashTest", "LibFS", "ShaleFormat", "ShaleMedia",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")]),

        .testTarget(name: "ShaleMediaTests", dependencies: ["ShaleMedia"]),
        .testTarget(name: "ShaleFormatTests", dependencies: ["ShaleFormat"]),
        .testTarget(name: "LibFSTests", dependencies: ["LibFS", "ShaleFormat", "ShaleMedia"]),
        .testTarget(name: "KernFSTests", dependencies: ["KernFS", "LibFS", "ShaleFormat", "ShaleMedia"]),
        .testTarget(name: "FileSystemTests", dependencies: ["KernFS", "LibFS", "ShaleFormat", "ShaleMedia",
                                                            .product(name: "SystemPackage", package: "swift-system")]),
        .testTarget(name: "CrashTestTests", dependencies: ["CrashTest", "KernFS", "LibFS", "ShaleFormat", "ShaleMedia"]),
        .testTarget(name: "CLITests", dependencies: ["shale", "CLinux", "KernFS", "LibFS", "ShaleFormat", "ShaleMedia",
                                                    .product(name: "SystemPackage", package: "swift-system")]),
    ],
    swiftLanguageModes: [.v6]
)
