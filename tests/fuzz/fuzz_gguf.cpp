// libFuzzer target: the GGUF reader, then everything the loader derives from metadata
// (hyperparameter checks, vocabulary, tokenizer construction), on arbitrary bytes.
#include <cstddef>
#include <cstdint>

#include "gguf/gguf.h"
#include "models/model.h"
#include "tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        auto file = lowbit::gguf::File::parse(data, size, "fuzz");
        for (auto& t : file->tensors()) (void)t.n_elements();
        lowbit::Tokenizer tok(lowbit::vocab_from_gguf(*file));
        auto ids = tok.tokenize("Hello world <|im_start|> 123", true, true);
        (void)tok.detokenize(ids, true);
    } catch (const lowbit::Error&) {
        // a clean rejection is the expected outcome for most inputs
    }
    return 0;
}
