// swift-tools-version: 6.1
import Foundation
import PackageDescription

// libFuzzer targets for every reader of untrusted input, built against the main package (../..).
// Build and run: see README.md (`./run.sh`). The main package is named by its folder, as SwiftPM
// names path dependencies.
let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
let main = root.lastPathComponent.lowercased()

let targets = ["FuzzModelFile", "FuzzTorchCheckpoint", "FuzzSafetensors", "FuzzNPY", "FuzzPNG", "FuzzIDX", "FuzzConfigJSON", "FuzzModelMetadata"]

let package = Package(
    name: "swift-tarflow-fuzz",
    products: targets.map { .executable(name: $0, targets: [$0]) },
    dependencies: [.package(path: "../..")],
    targets: [
        // Hands `main` to libFuzzer's driver (SwiftPM renames an executable's main).
        .target(name: "FuzzMain"),
        .target(
            name: "FuzzSupport",
            dependencies: [.product(name: "TarFlow", package: main), .product(name: "FlowIR", package: main)]
        ),
    ] + targets.map { .executableTarget(name: $0, dependencies: ["FuzzSupport", "FuzzMain"]) }
)
