// libFuzzer target: tokenize arbitrary bytes (invalid UTF-8 included) with the default
// model's vocabulary, then detokenize and stream-decode the ids.
// The vocabulary comes from the GGUF named by LOWBIT_FUZZ_MODEL.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "gguf/gguf.h"
#include "models/model.h"
#include "tokenizer.h"

namespace {

const lowbit::Tokenizer& tokenizer() {
    static std::unique_ptr<lowbit::Tokenizer> tok = [] {
        const char* path = std::getenv("LOWBIT_FUZZ_MODEL");
        if (!path) {
            std::fprintf(stderr, "set LOWBIT_FUZZ_MODEL to a GGUF file with a vocabulary\n");
            std::abort();
        }
        auto file = lowbit::gguf::File::open(path);
        return std::make_unique<lowbit::Tokenizer>(lowbit::vocab_from_gguf(*file));
    }();
    return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const lowbit::Tokenizer& tok = tokenizer();
    const std::string text(reinterpret_cast<const char*>(data), size);
    for (int mode = 0; mode < 2; ++mode) {
        auto ids = tok.tokenize(text, mode == 1, mode == 1);
        (void)tok.detokenize(ids, mode == 1);
        lowbit::StreamDecoder dec(tok, mode == 1);
        std::string streamed;
        for (int32_t id : ids) streamed += dec.push(id);
        streamed += dec.flush();
    }
    return 0;
}
