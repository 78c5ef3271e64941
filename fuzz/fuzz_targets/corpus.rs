//! A text corpus' bytes: decoding, the vocabulary, encoding and decoding back round-trip, or
//! an error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use recur_apps::charlm::data::{text_from_bytes, Vocab};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = text_from_bytes(Path::new("fuzz.txt"), data.to_vec()) {
        let vocab = Vocab::from_text(&text);
        let ids = vocab
            .encode(&text)
            .expect("a text's own vocabulary encodes it");
        assert_eq!(vocab.decode(&ids), text);
        let again =
            Vocab::from_chars(vocab.chars().to_vec()).expect("a vocabulary's chars rebuild it");
        assert_eq!(again, vocab);
    }
});
