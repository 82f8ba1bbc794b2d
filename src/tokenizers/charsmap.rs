//! Checks a SentencePiece model's precompiled normalization maps before the C++ library
//! loads it. The library trusts that blob: a damaged `tokenizer.ckpt` whose map points
//! outside itself made it read out of bounds and crash the process (found by fuzzing,
//! tests/fixtures/fuzz/sentencepiece/). The check follows every path the library's lookup
//! (darts-clone's `commonPrefixSearch`, then a C string in the normalized text) can take.

/// Every `precompiled_charsmap` (field 2) of the model's `normalizer_spec` (field 3) and
/// `denormalizer_spec` (field 5) must be well formed.
pub(crate) fn check_model(model: &[u8]) -> Result<(), String> {
    for spec_field in [3, 5] {
        for spec in length_delimited(model, spec_field)? {
            for blob in length_delimited(spec, 2)? {
                check_charsmap(blob)?;
            }
        }
    }
    Ok(())
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("truncated protobuf varint")?;
        *i += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("protobuf varint longer than 10 bytes".into())
}

/// The payloads of every occurrence of length-delimited `field` in a protobuf message.
fn length_delimited(msg: &[u8], field: u64) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < msg.len() {
        let key = varint(msg, &mut i)?;
        let skip = match key & 7 {
            0 => {
                varint(msg, &mut i)?;
                0
            }
            1 => 8,
            2 => {
                let n = varint(msg, &mut i)?;
                let n = usize::try_from(n).map_err(|_| "protobuf length overflows")?;
                let end = i.checked_add(n).filter(|&e| e <= msg.len());
                let end = end.ok_or("protobuf field runs past the end of the model")?;
                if key >> 3 == field {
                    out.push(&msg[i..end]);
                }
                n
            }
            5 => 4,
            w => {
                return Err(format!(
                    "protobuf wire type {w} is not used by SentencePiece"
                ))
            }
        };
        i = i
            .checked_add(skip)
            .filter(|&e| e <= msg.len())
            .ok_or("protobuf field runs past the end of the model")?;
    }
    Ok(out)
}

/// darts-clone's unit accessors.
fn has_leaf(u: u32) -> bool {
    (u >> 8) & 1 == 1
}
fn value(u: u32) -> u32 {
    u & ((1 << 31) - 1)
}
fn label(u: u32) -> u32 {
    u & ((1 << 31) | 0xff)
}
fn offset(u: u32) -> usize {
    ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize
}

/// `[u32 trie size][darts-clone double array][NUL-separated normalized strings]`.
fn check_charsmap(blob: &[u8]) -> Result<(), String> {
    let bad = |what: &str| Err(format!("damaged precompiled normalization map: {what}"));
    let Some(head) = blob.get(..4) else {
        return bad("shorter than its header");
    };
    let trie_size = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if !trie_size.is_multiple_of(4) || trie_size < 4 || trie_size > blob.len() - 4 {
        return bad("its trie size does not fit the map");
    }
    let units: Vec<u32> = blob[4..4 + trie_size]
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let normalized = &blob[4 + trie_size..];
    // Breadth-first over the states the lookup can reach: from state `pos`, byte `c` reads
    // unit `pos ^ c`; a matching label moves to `pos ^ c ^ offset`, whose unit holds the
    // value when the matched unit has a leaf.
    let mut seen = vec![false; units.len()];
    let mut todo = vec![offset(units[0])];
    while let Some(pos) = todo.pop() {
        for c in 0..256usize {
            let p = pos ^ c;
            let Some(&u) = units.get(p) else {
                return bad("a transition leaves the trie");
            };
            if label(u) != c as u32 {
                continue;
            }
            let q = p ^ offset(u);
            let Some(&leaf) = units.get(q) else {
                return bad("a transition leaves the trie");
            };
            if has_leaf(u) {
                let v = value(leaf) as usize;
                if !normalized.get(v..).is_some_and(|s| s.contains(&0)) {
                    return bad("a value points outside the normalized strings");
                }
            }
            if !seen[q] {
                seen[q] = true;
                todo.push(q);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_tokenizer_passes_and_damage_is_caught() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/asr/model/tokenizer.ckpt"
        );
        let model = std::fs::read(path).unwrap();
        check_model(&model).unwrap();
        let spec = length_delimited(&model, 3).unwrap();
        let blob = length_delimited(spec[0], 2).unwrap()[0];
        assert!(
            blob.len() > 1000,
            "the fixture has a real map: {}",
            blob.len()
        );
        // A trie size beyond the blob, and a first unit whose offset leaves the trie.
        let mut b = blob.to_vec();
        let n = b.len() as u32;
        b[..4].copy_from_slice(&n.to_le_bytes());
        assert!(check_charsmap(&b).is_err());
        let mut b = blob.to_vec();
        b[4..8].copy_from_slice(&(0xffff_fc00u32).to_le_bytes());
        assert!(check_charsmap(&b).is_err());
        assert!(check_charsmap(&blob[..3]).is_err());
    }
}
