// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-tarflow",
    products: [
        // MARK: - Public API
        .library(name: "TarFlow", targets: ["TarFlow"]),
        .library(name: "FlowIR", targets: ["FlowIR"]),
        .executable(name: "tarflow", targets: ["tarflow"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation.git", from: "0.9.20"),
    ],
    targets: [
        // MARK: - Layers (one-way: FlowIR <- FlowCompiler <- FlowRuntime <- TarFlow <- tarflow)
        .target(
            name: "FlowIR",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")]
        ),
        .target(name: "FlowCompiler", dependencies: ["FlowIR"]),
        .target(name: "FlowRuntime", dependencies: ["FlowIR", "FlowCompiler", "COpenBLAS", "CFlowKernels"]),
        // SIMD inner loops in C, each built for AVX-512, AVX2+F16C and baseline x86-64, picked at
        // load through a table (dispatch.c). Optimized in debug builds too: the test suite runs
        // whole models through them.
        .target(name: "CFlowKernels", cSettings: [.unsafeFlags(["-O2"], .when(configuration: .debug))]),
        .target(
            name: "TarFlow",
            dependencies: [
                "FlowIR", "FlowCompiler", "FlowRuntime", "CPNG", "CJPEG", "CTarFlowZlib",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
            ]
        ),
        .executableTarget(
            name: "tarflow",
            dependencies: [
                "TarFlow",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),

        // MARK: - System libraries (Debian: libopenblas-dev, libpng-dev, libjpeg-dev, zlib1g-dev)
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CJPEG", pkgConfig: "libjpeg", providers: [.apt(["libjpeg-dev"])]),
        .systemLibrary(name: "CTarFlowZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),

        // MARK: - Tests
        .testTarget(name: "FlowIRTests", dependencies: ["FlowIR"]),
        // Test helpers shared by test targets (test targets cannot import each other).
        .target(name: "FlowTestSupport", dependencies: ["FlowIR", "FlowCompiler"], path: "Tests/FlowTestSupport"),
        .testTarget(name: "FlowCompilerTests", dependencies: ["FlowIR", "FlowCompiler", "FlowRuntime", "FlowTestSupport"]),
        .testTarget(name: "FlowRuntimeTests", dependencies: ["FlowIR", "FlowCompiler", "FlowRuntime", "CFlowKernels", "COpenBLAS", "FlowTestSupport"]),
        .testTarget(
            name: "TarFlowTests",
            dependencies: ["TarFlow", "FlowIR", "FlowCompiler", "FlowRuntime", "tarflow", "FlowTestSupport"],
            exclude: [],
            resources: []
        ),
    ]
)
