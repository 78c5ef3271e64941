//! A checkpoint file's bytes: loading either gives a checkpoint whose model can be built and
//! whose tensors are all finite, or an error; never a panic, an abort or a huge allocation.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = recur::checkpoint::from_bytes(Path::new("fuzz.safetensors"), data) {
        let model = recur::model::Model::new(ck.model.clone()).expect("a loaded config builds");
        assert_eq!(model.num_params(), ck.params.len());
        assert!(ck.params.iter().all(|v| v.is_finite()));
    }
});
