#![no_main]
//! Pack record headers, trailers (with footers) and the forward record scan.
use jellysnap::decoders as pack;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pack::decode_record_header(data, 0);
    let _ = pack::scan_records(data, &pack::RawLimits::ANY);
    let len = data.len() as u64;
    if data.len() >= pack::FOOTER_LEN {
        let footer = &data[data.len() - pack::FOOTER_LEN..];
        if let Ok(tl) = pack::trailer_len_from_footer(footer, len) {
            let _ = pack::decode_trailer(&data[data.len() - tl as usize..], len);
        }
        let _ = pack::decode_trailer(data, len + 12);
        let _ = pack::open_trailer(data, len, &pack::RawLimits::ANY);
        let _ = pack::open_trailer(&data[data.len() / 2..], len, &pack::RawLimits::ANY);
    }
});
