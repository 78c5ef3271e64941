//! A recording's file name in a speech data directory (`<digit>_<speaker>_<take>.wav`): parsed
//! into its parts or refused with a message; never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        if let Ok((digit, speaker, _take)) = recur_apps::speech::dataset::parse_name(name) {
            assert!(digit <= 9);
            assert!(!speaker.is_empty());
            assert!(name.starts_with(&format!("{digit}_{speaker}_")) && name.ends_with(".wav"));
        }
    }
});
