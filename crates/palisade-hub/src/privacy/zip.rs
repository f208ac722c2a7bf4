//! A minimal streaming ZIP writer for the data export (DATA-4): entries are "stored"
//! (no compression), each followed by a data descriptor, so an entry is written as its
//! bytes are produced, without knowing its size first and without seeking. ZIP64
//! records are always written (sizes and offsets in 64 bits), so an export larger than
//! 4 GiB stays valid; every common reader (Info-ZIP `unzip`, Python `zipfile`, the
//! archive tools of Windows and macOS) reads ZIP64. No I/O here: output accumulates in
//! a buffer the caller drains with [`ZipWriter::take`].

/// Version needed to extract: 4.5 (ZIP64).
const VERSION: u16 = 45;
/// General purpose flags: sizes in a data descriptor (bit 3), UTF-8 names (bit 11).
const FLAGS: u16 = 0x0008 | 0x0800;
/// DOS date 1980-01-01 00:00: archive entries carry no meaningful time.
const DOS_DATE: u16 = 0x0021;

struct Finished {
    name: String,
    crc: u32,
    size: u64,
    offset: u64,
}

/// Writes one archive; bytes are appended to an internal buffer.
pub struct ZipWriter {
    out: Vec<u8>,
    written: u64,
    entries: Vec<Finished>,
    current: Option<(String, u32, u64, u64)>,
}

impl Default for ZipWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ZipWriter {
    pub fn new() -> Self {
        Self {
            out: Vec::with_capacity(64 * 1024),
            written: 0,
            entries: Vec::new(),
            current: None,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
    }

    /// Begin an entry (ending the previous one).
    pub fn start(&mut self, name: &str) {
        self.finish_entry();
        let offset = self.written;
        let mut h = Vec::with_capacity(64 + name.len());
        h.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        h.extend_from_slice(&VERSION.to_le_bytes());
        h.extend_from_slice(&FLAGS.to_le_bytes());
        h.extend_from_slice(&0u16.to_le_bytes()); // stored
        h.extend_from_slice(&0u16.to_le_bytes()); // time
        h.extend_from_slice(&DOS_DATE.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes()); // crc: in the descriptor
        h.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes()); // sizes: ZIP64
        h.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        h.extend_from_slice(&(name.len() as u16).to_le_bytes());
        h.extend_from_slice(&20u16.to_le_bytes()); // extra length
        h.extend_from_slice(name.as_bytes());
        // ZIP64 extra with zero sizes: tells readers the descriptor has 8-byte sizes.
        h.extend_from_slice(&0x0001u16.to_le_bytes());
        h.extend_from_slice(&16u16.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes());
        h.extend_from_slice(&0u64.to_le_bytes());
        self.put(&h);
        self.current = Some((name.to_owned(), !0, 0, offset));
    }

    /// Append bytes to the current entry.
    pub fn write(&mut self, data: &[u8]) {
        if let Some((_, crc, size, _)) = self.current.as_mut() {
            *crc = crc32_update(*crc, data);
            *size += data.len() as u64;
        }
        self.put(data);
    }

    fn finish_entry(&mut self) {
        let Some((name, crc, size, offset)) = self.current.take() else {
            return;
        };
        let crc = !crc;
        let mut d = Vec::with_capacity(24);
        d.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        d.extend_from_slice(&crc.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        d.extend_from_slice(&size.to_le_bytes());
        self.put(&d);
        self.entries.push(Finished {
            name,
            crc,
            size,
            offset,
        });
    }

    /// End the archive: the central directory and the (ZIP64) end records.
    pub fn finish(&mut self) {
        self.finish_entry();
        let cd_start = self.written;
        let entries = std::mem::take(&mut self.entries);
        for e in &entries {
            let mut c = Vec::with_capacity(80 + e.name.len());
            c.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            c.extend_from_slice(&(0x0300 | VERSION).to_le_bytes()); // made by: Unix
            c.extend_from_slice(&VERSION.to_le_bytes());
            c.extend_from_slice(&FLAGS.to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes());
            c.extend_from_slice(&0u16.to_le_bytes());
            c.extend_from_slice(&DOS_DATE.to_le_bytes());
            c.extend_from_slice(&e.crc.to_le_bytes());
            c.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
            c.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
            c.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
            c.extend_from_slice(&28u16.to_le_bytes()); // extra length
            c.extend_from_slice(&0u16.to_le_bytes()); // comment
            c.extend_from_slice(&0u16.to_le_bytes()); // disk
            c.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
            c.extend_from_slice(&(0o100_600u32 << 16).to_le_bytes()); // -rw-------
            c.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes()); // offset: ZIP64
            c.extend_from_slice(e.name.as_bytes());
            c.extend_from_slice(&0x0001u16.to_le_bytes());
            c.extend_from_slice(&24u16.to_le_bytes());
            c.extend_from_slice(&e.size.to_le_bytes());
            c.extend_from_slice(&e.size.to_le_bytes());
            c.extend_from_slice(&e.offset.to_le_bytes());
            self.put(&c);
        }
        let cd_size = self.written - cd_start;
        let count = entries.len() as u64;
        let eocd64 = self.written;
        let mut z = Vec::with_capacity(98);
        z.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        z.extend_from_slice(&44u64.to_le_bytes());
        z.extend_from_slice(&(0x0300 | VERSION).to_le_bytes());
        z.extend_from_slice(&VERSION.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&count.to_le_bytes());
        z.extend_from_slice(&count.to_le_bytes());
        z.extend_from_slice(&cd_size.to_le_bytes());
        z.extend_from_slice(&cd_start.to_le_bytes());
        // ZIP64 end of central directory locator.
        z.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        z.extend_from_slice(&0u32.to_le_bytes());
        z.extend_from_slice(&eocd64.to_le_bytes());
        z.extend_from_slice(&1u32.to_le_bytes());
        // Classic end record pointing at the ZIP64 one.
        z.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        z.extend_from_slice(&0xFFFFu16.to_le_bytes());
        z.extend_from_slice(&0xFFFFu16.to_le_bytes());
        z.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        z.extend_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        z.extend_from_slice(&0u16.to_le_bytes());
        self.put(&z);
    }

    /// Bytes produced so far and not yet taken.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// Take the bytes produced so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.out, Vec::with_capacity(64 * 1024))
    }
}

/// CRC-32 (IEEE), bitwise per byte through a table built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(!crc32_update(!0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn an_archive_ends_with_its_directory() {
        let mut z = ZipWriter::new();
        z.start("a.txt");
        z.write(b"hello");
        z.start("b.csv");
        z.write(b"x,y\n");
        z.finish();
        let bytes = z.take();
        assert_eq!(&bytes[..4], b"PK\x03\x04");
        assert_eq!(&bytes[bytes.len() - 22..bytes.len() - 18], b"PK\x05\x06");
    }
}
