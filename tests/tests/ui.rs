//! Every macro error message, compiled with trybuild and compared with its `.stderr`.
//! After an intended message change: `TRYBUILD=overwrite cargo test -p workflows-tests --test ui`.

#[test]
fn macro_errors() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
