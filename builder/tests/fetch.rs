//! Integration tests of fetch → verify → decompress → cache against a real HTTP server on
//! 127.0.0.1:0 (`http/mod.rs`) and real compressed files made here from generated data.
//! Covers the download "bad input" cases of issue 2: corrupt download, truncated `.xz`, a file
//! that is no known format, a pin the publisher disagrees with, an interrupted download.

mod http;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use piforge::acquire::cache::{BaseRequest, Cache, base_image};
use piforge::acquire::catalog::{Entry, FirstbootGen};
use piforge::acquire::decompress::{DecompressError, Format, decompress_to, decompress_to_checked};
use piforge::acquire::fetch::{FetchError, download, part_path};
use piforge::arch::Arch;
use sha2::{Digest, Sha256};

use http::TestServer;
use piforge_test_support::is_root;

const MIB: usize = 1 << 20;

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to matter.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image-shaped buffer: an MBR-ish first sector, data, long zero runs, text, noise.
fn disk_like(len: usize) -> Vec<u8> {
    let mut img = vec![0u8; len];
    img[510] = 0x55;
    img[511] = 0xAA;
    let mut at = MIB;
    let mut seed = 7;
    while at + MIB <= len {
        match (at / MIB) % 4 {
            0 => img[at..at + MIB / 2].copy_from_slice(&noise(MIB / 2, seed)),
            1 => {
                let text = b"rootfs bootfs cmdline.txt config.txt PARTUUID=deadbeef-02 ";
                for (i, b) in img[at..at + MIB].iter_mut().enumerate() {
                    *b = text[i % text.len()];
                }
            }
            _ => {} // zeros: holes in the output
        }
        seed += 1;
        at += MIB;
    }
    img
}

fn xz_multiblock(data: &[u8]) -> Vec<u8> {
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(2)
        .block_size(MIB as u64)
        .preset(1)
        .encoder()
        .unwrap();
    let mut enc = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zst(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).unwrap()
}

fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, data) in members {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn entry(server: &TestServer, path: &str, download: &[u8], extracted: Option<&[u8]>) -> Entry {
    Entry {
        name: "test-lite-arm64".into(),
        release_date: "2025-11-24".into(),
        suite: "bookworm".into(),
        arch: Arch::Arm64,
        url: server.url(path),
        sha256: sha(download),
        size: Some(download.len() as u64),
        extracted_sha256: extracted.map(sha),
        extracted_size: extracted.map(|e| e.len() as u64),
        firstboot: FirstbootGen::SysMods,
        description: "test".into(),
    }
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------- download

#[test]
fn download_verifies_and_renames() {
    let server = TestServer::start();
    let data = noise(3 * MIB + 123, 1);
    server.serve("/a.img.xz", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a.img.xz");
    let got = download(&server.url("/a.img.xz"), &dest, Some(&sha(&data)), false).unwrap();
    assert_eq!(got, sha(&data));
    assert!(fs::read(&dest).unwrap() == data);
    assert!(!part_path(&dest).exists());
}

#[test]
fn download_resumes_a_partial_file_with_range() {
    let server = TestServer::start();
    let data = noise(4 * MIB, 2);
    server.serve("/b.img.xz", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("b.img.xz");
    let have = 1_500_000;
    fs::write(part_path(&dest), &data[..have]).unwrap();

    download(&server.url("/b.img.xz"), &dest, Some(&sha(&data)), false).unwrap();

    let reqs = server.requests_for("/b.img.xz");
    assert_eq!(reqs.len(), 1);
    assert_eq!(
        reqs[0].range.as_deref(),
        Some(format!("bytes={have}-").as_str())
    );
    assert!(fs::read(&dest).unwrap() == data);
}

#[test]
fn download_restarts_when_the_server_ignores_range() {
    let server = TestServer::start();
    let data = noise(2 * MIB, 3);
    server.serve("/c.img", data.clone());
    server.ignore_range("/c.img");
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("c.img");
    // A stale .part with wrong bytes: it must be discarded, not prepended.
    fs::write(part_path(&dest), vec![0xEE; 700_000]).unwrap();

    download(&server.url("/c.img"), &dest, Some(&sha(&data)), false).unwrap();

    assert!(server.requests_for("/c.img")[0].range.is_some());
    assert!(fs::read(&dest).unwrap() == data);
}

#[test]
fn download_of_a_complete_part_file_finishes_without_refetching() {
    let server = TestServer::start();
    let data = noise(MIB, 4);
    server.serve("/d.img", data.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("d.img");
    fs::write(part_path(&dest), &data).unwrap();
    download(&server.url("/d.img"), &dest, Some(&sha(&data)), false).unwrap();
    assert!(fs::read(&dest).unwrap() == data);
}

#[test]
fn corrupt_download_is_a_checksum_mismatch_and_leaves_nothing() {
    let server = TestServer::start();
    let good = noise(2 * MIB, 5);
    let mut bad = good.clone();
    bad[MIB] ^= 0x01;
    server.serve("/e.img.xz", bad.clone());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("e.img.xz");
    let url = server.url("/e.img.xz");

    let err = download(&url, &dest, Some(&sha(&good)), false).unwrap_err();

    match &err {
        FetchError::ChecksumMismatch {
            url: u,
            expected,
            actual,
        } => {
            assert_eq!(u, &url);
            assert_eq!(expected, &sha(&good));
            assert_eq!(actual, &sha(&bad));
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("run again"), "{msg}");
    assert!(!part_path(&dest).exists(), "the .part must be deleted");
    assert!(!dest.exists());
}

#[test]
fn interrupted_download_keeps_the_part_and_the_next_call_resumes() {
    let server = TestServer::start();
    let data = noise(3 * MIB, 6);
    server.serve("/f.img.xz", data.clone());
    server.cut_after("/f.img.xz", MIB as u64, 1);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("f.img.xz");
    let url = server.url("/f.img.xz");

    let err = download(&url, &dest, Some(&sha(&data)), false).unwrap_err();
    assert!(
        matches!(err, FetchError::Interrupted { got, .. } if got == MIB as u64),
        "{err:?}"
    );
    assert!(err.to_string().contains("run again to resume"), "{err}");
    assert_eq!(fs::metadata(part_path(&dest)).unwrap().len(), MIB as u64);
    assert!(!dest.exists());

    download(&url, &dest, Some(&sha(&data)), false).unwrap();
    let reqs = server.requests_for("/f.img.xz");
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].range.as_deref(),
        Some(format!("bytes={MIB}-").as_str())
    );
    assert!(fs::read(&dest).unwrap() == data);
}

#[test]
fn missing_file_is_an_http_error() {
    let server = TestServer::start();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("g.img");
    let err = download(&server.url("/nope.img"), &dest, None, false).unwrap_err();
    assert!(
        matches!(err, FetchError::Http { status: 404, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("404"));
    assert!(!dest.exists());
}

// ---------------------------------------------------------------- decompress

fn decompress_bytes(
    compressed: &[u8],
    name: &str,
) -> (Vec<u8>, piforge::acquire::decompress::DecompressStats) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join(name);
    fs::write(&src, compressed).unwrap();
    let dest = dir.path().join("out.img");
    let stats = decompress_to(&src, &dest, false).unwrap();
    assert!(!part_path(&dest).exists());
    (fs::read(&dest).unwrap(), stats)
}

#[test]
fn every_format_decompresses_to_identical_bytes() {
    let img = disk_like(6 * MIB + 4096 + 17);
    let xz = xz_multiblock(&img);
    let cases = [
        (xz, Format::Xz),
        (gz(&img), Format::Gz),
        (zst(&img), Format::Zst),
        (
            zip_of(&[("README.txt", b"hi"), ("disk.img", &img)]),
            Format::Zip,
        ),
        (img.clone(), Format::Raw),
    ];
    for (bytes, format) in cases {
        // Names lie on purpose: the format comes from the magic bytes.
        let (out, stats) = decompress_bytes(&bytes, "download.bin");
        assert_eq!(stats.format, format);
        assert!(out == img, "{format}: output differs");
        assert_eq!(stats.output_bytes, img.len() as u64);
        assert_eq!(stats.sha256, sha(&img));
        assert_eq!(stats.input_bytes, bytes.len() as u64);
    }
}

#[test]
fn xz_test_input_really_is_multi_block() {
    let img = disk_like(6 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("m.img.xz");
    fs::write(&src, xz_multiblock(&img)).unwrap();
    let Ok(out) = std::process::Command::new("xz")
        .args(["--robot", "--list"])
        .arg(&src)
        .output()
    else {
        eprintln!("xz not installed; skipping the block count check");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: u64 = text
        .lines()
        .find(|l| l.starts_with("totals"))
        .and_then(|l| l.split('\t').nth(2))
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| panic!("unexpected xz --list output: {text}"));
    assert!(blocks >= 6, "{blocks} blocks");
}

#[test]
fn truncated_xz_is_a_clear_error_and_leaves_no_output() {
    let img = disk_like(4 * MIB);
    let xz = xz_multiblock(&img);
    for cut in [xz.len() / 2, xz.len() - 40] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("t.img.xz");
        fs::write(&src, &xz[..cut]).unwrap();
        let dest = dir.path().join("t.img");
        let err = decompress_to(&src, &dest, false).unwrap_err();
        assert!(
            matches!(
                err,
                DecompressError::Corrupt {
                    format: Format::Xz,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("t.img.xz is truncated or corrupt: "), "{msg}");
        assert!(!dest.exists());
        assert!(!part_path(&dest).exists());
    }
}

#[test]
fn truncated_gz_zst_and_zip_are_errors_too() {
    let img = disk_like(3 * MIB);
    for (bytes, name) in [
        (gz(&img), "t.img.gz"),
        (zst(&img), "t.img.zst"),
        (zip_of(&[("t.img", &img)]), "t.zip"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join(name);
        fs::write(&src, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let dest = dir.path().join("t.img");
        let err = decompress_to(&src, &dest, false).unwrap_err();
        assert!(
            err.to_string().contains("is truncated or corrupt"),
            "{name}: {err}"
        );
        assert!(!dest.exists() && !part_path(&dest).exists(), "{name}");
    }
}

#[test]
fn zip_with_two_images_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("two.zip");
    fs::write(&src, zip_of(&[("a.img", b"a"), ("b.img", b"b")])).unwrap();
    let err = decompress_to(&src, &dir.path().join("x.img"), false).unwrap_err();
    assert!(matches!(err, DecompressError::Zip { .. }), "{err:?}");
    assert!(err.to_string().contains("a.img, b.img"), "{err}");
}

#[test]
fn unknown_format_passes_through_as_raw() {
    let text = b"this is not a disk image, just text\n".repeat(1000);
    let (out, stats) = decompress_bytes(&text, "notes.img.xz");
    assert_eq!(stats.format, Format::Raw);
    assert_eq!(out, text);
}

#[test]
fn output_is_sparse() {
    let mut img = vec![0u8; 64 * MIB];
    for at in [0, 10 * MIB, 40 * MIB + 4096, 64 * MIB - 4096] {
        img[at..at + 4096].copy_from_slice(&noise(4096, at as u64));
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("s.img.zst");
    fs::write(&src, zst(&img)).unwrap();
    let dest = dir.path().join("s.img");
    let stats = decompress_to(&src, &dest, false).unwrap();
    assert_eq!(stats.data_bytes, 4 * 4096);
    let meta = fs::metadata(&dest).unwrap();
    assert_eq!(meta.len(), img.len() as u64);
    let allocated = meta.blocks() * 512;
    assert!(
        allocated < img.len() as u64 / 8,
        "{allocated} bytes allocated for a 64 MiB image"
    );
    assert!(fs::read(&dest).unwrap() == img);
}

#[test]
fn extracted_checksum_mismatch_removes_the_output() {
    let img = disk_like(2 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("x.img.gz");
    fs::write(&src, gz(&img)).unwrap();
    let dest = dir.path().join("x.img");
    let wrong = sha(b"something else");
    let err = decompress_to_checked(&src, &dest, Some(&wrong), false).unwrap_err();
    assert!(
        matches!(err, DecompressError::ExtractedMismatch { .. }),
        "{err:?}"
    );
    assert!(!dest.exists() && !part_path(&dest).exists());
}

// ---------------------------------------------------------------- cache / base_image

#[test]
fn catalog_image_is_downloaded_extracted_once_and_read_only() {
    let server = TestServer::start();
    let img = disk_like(5 * MIB);
    let xz = xz_multiblock(&img);
    server.serve("/r/x-lite.img.xz", xz.clone());
    server.serve(
        "/r/x-lite.img.xz.sha256",
        format!("{}  x-lite.img.xz\n", sha(&xz)),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let req = BaseRequest::Catalog(entry(&server, "/r/x-lite.img.xz", &xz, Some(&img)));

    let base = base_image(&req, &cache, false).unwrap();
    assert_eq!(base.name, "test-lite-arm64");
    assert_eq!(base.path.file_name().unwrap(), "x-lite.img");
    assert!(fs::read(&base.path).unwrap() == img);
    let meta = fs::metadata(&base.path).unwrap();
    assert_eq!(meta.mode() & 0o222, 0, "base image must be read-only");
    assert!(fs::OpenOptions::new().write(true).open(&base.path).is_err() || is_root());
    let seen = server.requests().len();
    let ino = meta.ino();

    let again = base_image(&req, &cache, false).unwrap();
    assert_eq!(again.path, base.path);
    assert_eq!(
        server.requests().len(),
        seen,
        "second call must not touch the network"
    );
    let meta2 = fs::metadata(&again.path).unwrap();
    assert_eq!(
        (meta2.ino(), meta2.mtime()),
        (ino, meta.mtime()),
        "not re-extracted"
    );
    assert!(
        files_under(cache_dir.path())
            .iter()
            .all(|p| !p.to_string_lossy().ends_with(".part"))
    );
}

#[test]
fn published_checksum_disagreeing_with_the_pin_is_refused_before_downloading() {
    let server = TestServer::start();
    let xz = xz_multiblock(&disk_like(2 * MIB));
    server.serve("/r/y-lite.img.xz", xz.clone());
    server.serve(
        "/r/y-lite.img.xz.sha256",
        format!("{}  y-lite.img.xz\n", sha(b"other")),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let req = BaseRequest::Catalog(entry(&server, "/r/y-lite.img.xz", &xz, None));

    let err = base_image(&req, &Cache::new(cache_dir.path()), false).unwrap_err();

    let fe = err.downcast_ref::<FetchError>().expect("a FetchError");
    assert!(matches!(fe, FetchError::PinDisagrees { .. }), "{fe:?}");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("out of date") && msg.contains("compromised"),
        "{msg}"
    );
    assert!(
        server.requests_for("/r/y-lite.img.xz").is_empty(),
        "image was requested"
    );
    assert!(files_under(cache_dir.path()).is_empty());
}

#[test]
fn catalog_image_with_a_wrong_pin_is_refused_after_download() {
    let server = TestServer::start();
    let xz = xz_multiblock(&disk_like(2 * MIB));
    server.serve("/r/z-lite.img.xz", xz.clone());
    // No published .sha256: the pin alone decides.
    let mut e = entry(&server, "/r/z-lite.img.xz", &xz, None);
    e.sha256 = sha(b"not it");
    let cache_dir = tempfile::tempdir().unwrap();
    let err = base_image(
        &BaseRequest::Catalog(e),
        &Cache::new(cache_dir.path()),
        false,
    )
    .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<FetchError>(),
            Some(FetchError::ChecksumMismatch { .. })
        ),
        "{err:#}"
    );
    assert!(
        files_under(cache_dir.path()).is_empty(),
        "{:?}",
        files_under(cache_dir.path())
    );
}

#[test]
fn url_without_published_checksum_works_and_is_reused() {
    let server = TestServer::start();
    let img = disk_like(3 * MIB);
    server.serve("/any/disk.img.gz", gz(&img));
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());
    let req = BaseRequest::Url(server.url("/any/disk.img.gz"));

    let base = base_image(&req, &cache, false).unwrap();
    assert_eq!(base.name, "disk");
    assert!(fs::read(&base.path).unwrap() == img);
    assert_eq!(base.download_sha256, Some(sha(&gz(&img))));
    let again = base_image(&req, &cache, false).unwrap();
    assert_eq!(again.path, base.path);
    assert_eq!(
        server.requests_for("/any/disk.img.gz").len(),
        1,
        "downloaded twice"
    );
}

#[test]
fn url_with_published_checksum_rejects_corrupt_bytes() {
    let server = TestServer::start();
    let good = zst(&disk_like(2 * MIB));
    let mut bad = good.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0xFF;
    server.serve("/u/v.img.zst", bad);
    server.serve(
        "/u/v.img.zst.sha256",
        format!("{}  v.img.zst\n", sha(&good)),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let err = base_image(
        &BaseRequest::Url(server.url("/u/v.img.zst")),
        &Cache::new(cache_dir.path()),
        false,
    )
    .unwrap_err();
    assert!(
        matches!(
            err.downcast_ref::<FetchError>(),
            Some(FetchError::ChecksumMismatch { .. })
        ),
        "{err:#}"
    );
    assert!(files_under(cache_dir.path()).is_empty());
}

#[test]
fn raw_file_is_used_in_place_and_compressed_file_is_extracted_once() {
    let img = disk_like(2 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("mine.img");
    fs::write(&raw, &img).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());

    let base = base_image(&BaseRequest::File(raw.clone()), &cache, false).unwrap();
    assert_eq!(base.path, fs::canonicalize(&raw).unwrap());
    assert_eq!(base.name, "mine");
    assert!(
        files_under(cache_dir.path()).is_empty(),
        "a raw file is not copied"
    );

    let xz_path = dir.path().join("mine.img.xz");
    fs::write(&xz_path, xz_multiblock(&img)).unwrap();
    let base = base_image(&BaseRequest::File(xz_path.clone()), &cache, false).unwrap();
    assert!(base.path.starts_with(cache_dir.path()));
    assert!(fs::read(&base.path).unwrap() == img);
    let mtime = fs::metadata(&base.path).unwrap().mtime_nsec();
    let again = base_image(&BaseRequest::File(xz_path), &cache, false).unwrap();
    assert_eq!(again.path, base.path);
    assert_eq!(fs::metadata(&again.path).unwrap().mtime_nsec(), mtime);
}

#[test]
fn truncated_local_xz_fails_without_leaving_cache_files() {
    let xz = xz_multiblock(&disk_like(3 * MIB));
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("cut.img.xz");
    fs::write(&src, &xz[..xz.len() / 3]).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let err = base_image(
        &BaseRequest::File(src),
        &Cache::new(cache_dir.path()),
        false,
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("cut.img.xz is truncated or corrupt"), "{msg}");
    assert!(
        files_under(cache_dir.path()).is_empty(),
        "{:?}",
        files_under(cache_dir.path())
    );
}

#[test]
fn url_serving_a_raw_image_is_kept_read_only_without_a_copy() {
    let server = TestServer::start();
    let img = disk_like(2 * MIB);
    server.serve("/raw/disk.img", img.clone());
    // Compressed bytes behind a `.img` name are still extracted, by magic.
    server.serve("/raw/lying.img", gz(&img));
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(cache_dir.path());

    let base = base_image(
        &BaseRequest::Url(server.url("/raw/disk.img")),
        &cache,
        false,
    )
    .unwrap();
    assert_eq!(base.path.file_name().unwrap(), "disk.img");
    assert_eq!(fs::metadata(&base.path).unwrap().mode() & 0o222, 0);
    assert!(fs::read(&base.path).unwrap() == img);

    let lying = base_image(
        &BaseRequest::Url(server.url("/raw/lying.img")),
        &cache,
        false,
    )
    .unwrap();
    assert!(fs::read(&lying.path).unwrap() == img);
    assert_eq!(fs::metadata(&lying.path).unwrap().mode() & 0o222, 0);
}

#[test]
fn url_with_a_soft_404_checksum_page_still_downloads() {
    let server = TestServer::start();
    let img = disk_like(MIB);
    server.serve("/s/disk.img.zst", zst(&img));
    server.serve(
        "/s/disk.img.zst.sha256",
        "<html><body>Not found</body></html>",
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let base = base_image(
        &BaseRequest::Url(server.url("/s/disk.img.zst")),
        &Cache::new(cache_dir.path()),
        false,
    )
    .unwrap();
    assert!(fs::read(&base.path).unwrap() == img);
}

#[test]
fn catalog_image_with_an_unusable_published_checksum_is_refused() {
    let server = TestServer::start();
    let xz = xz_multiblock(&disk_like(MIB));
    server.serve("/r/w-lite.img.xz", xz.clone());
    server.serve(
        "/r/w-lite.img.xz.sha256",
        format!("{}  other.img.xz\n", sha(&xz)),
    );
    let cache_dir = tempfile::tempdir().unwrap();
    let req = BaseRequest::Catalog(entry(&server, "/r/w-lite.img.xz", &xz, None));
    let err = base_image(&req, &Cache::new(cache_dir.path()), false).unwrap_err();
    assert!(
        format!("{err:#}").contains("only lists other.img.xz"),
        "{err:#}"
    );
    assert!(server.requests_for("/r/w-lite.img.xz").is_empty());
}
