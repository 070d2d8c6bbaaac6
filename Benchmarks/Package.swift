// swift-tools-version: 6.1
// Benchmarks of swift-tarflow's executor, in their own package so the main package stays free
// of the benchmark dependency. Run: `cd Benchmarks && swift package benchmark`.
import PackageDescription

let package = Package(
    name: "TarFlowBenchmarks",
    dependencies: [
        .package(name: "swift-tarflow", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "ExecutorBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "TarFlow", package: "swift-tarflow"),
            ],
            path: "Benchmarks/ExecutorBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
