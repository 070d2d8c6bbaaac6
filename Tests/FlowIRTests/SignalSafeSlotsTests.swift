import XCTest
@testable import FlowIR

/// The fixed slot table the SIGBUS guard and the temporary-file cleanup read from their signal
/// handlers: first free slot wins, a freed slot is reused, a full table refuses.
final class SignalSafeSlotsTests: XCTestCase {
    func used(_ t: SignalSafeSlots) -> [Int] { (0..<t.count).filter { t.isUsed($0) } }

    func testRegisterLookUpUnregisterAndReuse() {
        let t = SignalSafeSlots(count: 3, textBytes: 8, wordsPerSlot: 2)
        XCTAssertEqual(used(t), [])
        XCTAssertEqual(t.register(text: Array("abc".utf8), words: [10, 20]), 0)
        XCTAssertEqual(t.register(text: Array("defghij".utf8), words: [30, 40]), 1)
        XCTAssertEqual(used(t), [0, 1])
        // Look-up as a handler does it: the text is NUL-terminated, the words are in place.
        XCTAssertEqual(String(cString: t.text(0)), "abc")
        XCTAssertEqual(String(cString: t.text(1)), "defghij")
        XCTAssertEqual([t.words(0)[0], t.words(0)[1], t.words(1)[0], t.words(1)[1]], [10, 20, 30, 40])

        t.unregister(0)
        XCTAssertEqual(used(t), [1])
        // The freed slot is the first free one again; a shorter text overwrites it whole.
        XCTAssertEqual(t.register(text: Array("x".utf8), words: [50, 60]), 0)
        XCTAssertEqual(String(cString: t.text(0)), "x")
        XCTAssertEqual([t.words(0)[0], t.words(0)[1]], [50, 60])
        XCTAssertEqual(String(cString: t.text(1)), "defghij")
    }

    func testFullTableRefusesUntilASlotIsFreed() {
        let t = SignalSafeSlots(count: 2, textBytes: 4)
        XCTAssertEqual(t.wordsPerSlot, 0)
        XCTAssertEqual(t.register(text: Array("a".utf8)), 0)
        XCTAssertEqual(t.register(text: Array("b".utf8)), 1)
        XCTAssertNil(t.register(text: Array("c".utf8)))
        XCTAssertEqual(used(t), [0, 1])
        XCTAssertEqual(String(cString: t.text(1)), "b")
        t.unregister(1)
        XCTAssertEqual(t.register(text: Array("c".utf8)), 1)
        XCTAssertEqual(String(cString: t.text(1)), "c")
        XCTAssertEqual(String(cString: t.text(0)), "a")
    }

    func testAnEmptyTextIsJustTheTerminator() {
        let t = SignalSafeSlots(count: 1, textBytes: 2)
        XCTAssertEqual(t.register(text: Array("z".utf8)), 0)
        t.unregister(0)
        XCTAssertEqual(t.register(text: []), 0)
        XCTAssertEqual(String(cString: t.text(0)), "")
    }
}
