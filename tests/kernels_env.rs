//! A library caller with a bad `EDGECSM_KERNELS` gets an error from the model constructors,
//! not a panic (the kernel set is chosen on first use). One test in its own binary: the
//! variable is process-wide and the choice is made once.

#[test]
fn a_bad_kernel_override_is_an_error_from_load() {
    // SAFETY: the only test of this binary sets the variable before any other thread reads it.
    unsafe { std::env::set_var("EDGECSM_KERNELS", "bogus") };
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
    let e = edgecsm::mimi::Mimi::load(format!("{root}/mimi-tiny")).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
    let e = edgecsm::csm::Csm::load(format!("{root}/csm-tiny")).unwrap_err();
    assert!(e.to_string().contains("bogus"), "{e}");
}
