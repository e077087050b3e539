//! OP_COMPRESSED compressors: snappy, zlib and zstd (plus `noop`, which drivers may use too).
//!
//! Decompression is the one place where a small frame can ask for a lot of memory, so every
//! decompressor is told the exact size the sender claimed (already capped at the maximum message
//! size by the caller) and fails if the data inflates beyond it.

use std::io::{Read, Write};

/// A message compressor, numbered as in MongoDB's OP_COMPRESSED `compressorId`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compressor {
    /// Id 0: the body is stored uncompressed.
    Noop,
    /// Id 1: snappy (raw format, no framing).
    Snappy,
    /// Id 2: zlib (RFC 1950).
    Zlib,
    /// Id 3: zstd.
    Zstd,
}

impl Compressor {
    /// The compressors a server offers in `hello`, in its preference order.
    pub const SUPPORTED: [Compressor; 3] = [Compressor::Zstd, Compressor::Snappy, Compressor::Zlib];

    /// The `compressorId` byte.
    pub fn id(self) -> u8 {
        match self {
            Compressor::Noop => 0,
            Compressor::Snappy => 1,
            Compressor::Zlib => 2,
            Compressor::Zstd => 3,
        }
    }

    /// Looks a `compressorId` up.
    pub fn from_id(id: u8) -> Option<Compressor> {
        match id {
            0 => Some(Compressor::Noop),
            1 => Some(Compressor::Snappy),
            2 => Some(Compressor::Zlib),
            3 => Some(Compressor::Zstd),
            _ => None,
        }
    }

    /// The name used in `hello`'s `compression` list.
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Noop => "noop",
            Compressor::Snappy => "snappy",
            Compressor::Zlib => "zlib",
            Compressor::Zstd => "zstd",
        }
    }

    /// Looks a compressor up by its `hello` name.
    pub fn from_name(name: &str) -> Option<Compressor> {
        match name {
            "noop" => Some(Compressor::Noop),
            "snappy" => Some(Compressor::Snappy),
            "zlib" => Some(Compressor::Zlib),
            "zstd" => Some(Compressor::Zstd),
            _ => None,
        }
    }

    /// Compresses `data`.
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Compressor::Noop => Ok(data.to_vec()),
            Compressor::Snappy => {
                snap::raw::Encoder::new().compress_vec(data).map_err(|e| e.to_string())
            }
            Compressor::Zlib => {
                let mut enc =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
                enc.write_all(data).map_err(|e| e.to_string())?;
                enc.finish().map_err(|e| e.to_string())
            }
            Compressor::Zstd => zstd::bulk::compress(data, 1).map_err(|e| e.to_string()),
        }
    }

    /// Decompresses `data`, which must inflate to exactly `expected_len` bytes.
    pub fn decompress(self, data: &[u8], expected_len: usize) -> Result<Vec<u8>, String> {
        let out = match self {
            Compressor::Noop => data.to_vec(),
            Compressor::Snappy => {
                let len = snap::raw::decompress_len(data).map_err(|e| e.to_string())?;
                if len != expected_len {
                    return Err(format!(
                        "snappy data decompresses to {len} bytes, header says {expected_len}"
                    ));
                }
                snap::raw::Decoder::new().decompress_vec(data).map_err(|e| e.to_string())?
            }
            Compressor::Zlib => {
                let mut out = Vec::with_capacity(expected_len);
                // Read one byte more than allowed so that an overlong stream is detected without
                // ever inflating it fully.
                flate2::read::ZlibDecoder::new(data)
                    .take(expected_len as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| e.to_string())?;
                out
            }
            Compressor::Zstd => {
                zstd::bulk::decompress(data, expected_len).map_err(|e| e.to_string())?
            }
        };
        if out.len() != expected_len {
            return Err(format!(
                "{} data decompresses to {} bytes, header says {expected_len}",
                self.name(),
                out.len()
            ));
        }
        Ok(out)
    }
}
