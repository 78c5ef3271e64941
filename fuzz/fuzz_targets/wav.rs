//! A WAV file's bytes: reading gives samples in [-1, 1] or an error naming the file.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(x) = recur_apps::speech::wav::parse_wav(Path::new("fuzz.wav"), data, 8000) {
        assert!(!x.is_empty());
        assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
});
