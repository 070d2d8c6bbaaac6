import FuzzSupport

/// libFuzzer entry: see FuzzEntry.configJSON.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzEntry.configJSON(data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? [])
    return 0
}
