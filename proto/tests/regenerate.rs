//! Regenerates the committed code from the .proto files and fails on any difference.

use std::path::{Path, PathBuf};

const PROTOS: &[&str] = &["rjob/v1/agent.proto", "rjob/v1/controller.proto"];

fn generate(out_dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let include = root.join("proto");
    let include = include.to_str().expect("utf-8 path");
    let includes = [include];
    let fds = protox::compile(PROTOS, includes).expect("the .proto files compile");
    let fds_path = out_dir.join("fds.bin");
    std::fs::write(&fds_path, prost::Message::encode_to_vec(&fds)).expect("write descriptor set");
    let mut config = prost_build::Config::new();
    config.file_descriptor_set_path(&fds_path).skip_protoc_run();
    tonic_prost_build::configure()
        .out_dir(out_dir)
        // prost's codec, with a scan of start requests before they are decoded.
        .codec_path("crate::codec::GuardCodec")
        .compile_with_config(config, PROTOS, &includes)
        .expect("code generation");
    std::fs::remove_file(&fds_path).expect("remove descriptor set");
}

#[test]
fn generated_code_matches_proto_files() {
    let committed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/gen");
    if std::env::var_os("RJOB_REGENERATE").is_some() {
        std::fs::create_dir_all(&committed).expect("create src/gen");
        generate(&committed);
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    generate(tmp.path());
    let fresh = std::fs::read_to_string(tmp.path().join("rjob.v1.rs")).expect("generated file");
    let old = std::fs::read_to_string(committed.join("rjob.v1.rs")).unwrap_or_default();
    assert!(
        fresh == old,
        "proto/src/gen/rjob.v1.rs is stale: run `RJOB_REGENERATE=1 cargo test -p rjob-proto` and commit the result"
    );
}
