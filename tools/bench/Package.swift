// swift-tools-version:6.0
// Shale's benchmarks, in their own package so that `make test` and CI never build them.
// `make bench` (tools/bench/run) builds this in release mode and compares each figure with
// a reference measured in the same run.
import PackageDescription

let package = Package(
    name: "ShaleBench",
    dependencies: [
        .package(name: "Shale", path: "../.."),
    ],
    targets: [
        .executableTarget(name: "shale-bench",
                          dependencies: [.product(name: "ShaleMedia", package: "Shale"),
                                         .product(name: "LibFS", package: "Shale"),
                                         .product(name: "KernFS", package: "Shale")]),
    ],
    swiftLanguageModes: [.v6]
)
