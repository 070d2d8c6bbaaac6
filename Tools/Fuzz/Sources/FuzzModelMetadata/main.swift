import FuzzSupport

/// libFuzzer entry: see FuzzEntry.modelMetadata.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.modelMetadata(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
