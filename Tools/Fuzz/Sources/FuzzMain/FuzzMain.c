// SwiftPM links every Swift executable with `main` renamed to `<Module>_main` (so tests can link
// executables). Fuzz targets built with -parse-as-library have no main of their own, so these
// hand control to libFuzzer's driver, which calls the target's LLVMFuzzerTestOneInput.
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_MAIN(module) \
    int module##_main(int argc, char **argv) { return LLVMFuzzerRunDriver(&argc, &argv, LLVMFuzzerTestOneInput); }

FUZZ_MAIN(FuzzModelFile)
FUZZ_MAIN(FuzzTorchCheckpoint)
FUZZ_MAIN(FuzzSafetensors)
FUZZ_MAIN(FuzzNPY)
FUZZ_MAIN(FuzzPNG)
FUZZ_MAIN(FuzzIDX)
FUZZ_MAIN(FuzzConfigJSON)
FUZZ_MAIN(FuzzModelMetadata)
