//! How long an uploaded audio file plays, read from its container (WAV,
//! MP3, M4A/MP4, OGG, FLAC, WebM/Matroska) without decoding it.
//!
//! The duration is counted from the packets the file actually holds, not
//! taken from its header: a header is the uploader's claim, and a file
//! whose header claims more than its packets hold (a truncated file, or one
//! forged to claim hours) is refused, as is one longer than the configured
//! maximum. The count bounds what a provider can bill for the file.

use std::io::Cursor;

use bytes::Bytes;
use symphonia::core::errors::Error as MediaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// What was read from a file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Audio {
    /// Seconds of audio the packets hold.
    pub seconds: f64,
    /// Channels of its audio track (1 when the container does not say).
    pub channels: u32,
}

impl Audio {
    /// Whole seconds, rounded up: what a per-second price bills.
    pub fn whole_seconds(&self) -> u64 {
        self.seconds.ceil() as u64
    }
}

/// A header may round its own duration a little (encoder delay, padding,
/// a last partial packet); anything more than this beyond the packets is a
/// claim the file does not back.
const HEADER_SLACK_SECONDS: f64 = 0.25;

/// Reads `data`'s duration; `name` (the upload's file name) hints at the
/// format. An error says, for the client, why the file was refused.
pub fn read(data: Bytes, name: Option<&str>, max_seconds: u64) -> Result<Audio, String> {
    if data.is_empty() {
        return Err("the audio file is empty".into());
    }
    let mut hint = Hint::new();
    if let Some(ext) = name.and_then(|n| n.rsplit_once('.')).map(|(_, e)| e.to_ascii_lowercase()) {
        hint.with_extension(&ext);
    }
    let source =
        MediaSourceStream::new(Box::new(Cursor::new(data)), MediaSourceStreamOptions::default());
    let opts = FormatOptions { enable_gapless: false, ..Default::default() };
    let probed = symphonia::default::get_probe()
        .format(&hint, source, &opts, &MetadataOptions::default())
        .map_err(|e| {
            format!("the file is not audio qlaud can read (WAV, MP3, M4A, OGG, FLAC or WebM): {e}")
        })?;
    let mut format = probed.format;
    let track =
        format.default_track().ok_or_else(|| "the file has no audio track".to_string())?.clone();
    let params = &track.codec_params;
    let time_base = params
        .time_base
        .or_else(|| params.sample_rate.map(|r| symphonia::core::units::TimeBase::new(1, r)));
    let Some(time_base) = time_base else {
        return Err("the file does not say its sample rate".into());
    };
    let seconds_of = |ts: u64| {
        let t = time_base.calc_time(ts);
        t.seconds as f64 + t.frac
    };
    let claimed = params.n_frames.map(|n| seconds_of(params.start_ts.saturating_add(n)));
    if let Some(claimed) = claimed
        && claimed > max_seconds as f64 + HEADER_SLACK_SECONDS
    {
        return Err(format!(
            "the file claims {claimed:.0} s of audio; at most {max_seconds} s are accepted"
        ));
    }
    // Count what the packets hold; stop early past the maximum.
    let mut end: u64 = 0;
    loop {
        match format.next_packet() {
            Ok(p) if p.track_id() == track.id => {
                end = end.max(p.ts().saturating_add(p.dur()));
                if seconds_of(end) > max_seconds as f64 + HEADER_SLACK_SECONDS {
                    return Err(format!("the audio is longer than the {max_seconds} s accepted"));
                }
            }
            Ok(_) => {}
            Err(MediaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(MediaError::ResetRequired) => break,
            Err(e) => return Err(format!("the audio file is damaged: {e}")),
        }
    }
    let seconds = seconds_of(end) - seconds_of(params.start_ts);
    if seconds <= 0.0 {
        return Err("the file holds no audio".into());
    }
    if let Some(claimed) = claimed
        && claimed - seconds_of(params.start_ts) > seconds + HEADER_SLACK_SECONDS
    {
        return Err(format!(
            "the file is truncated or inconsistent: its header claims {claimed:.1} s but it \
             holds {seconds:.1} s of audio"
        ));
    }
    let channels = params.channels.map_or(1, |c| c.count() as u32).max(1);
    Ok(Audio { seconds, channels })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV of `seconds` of silence at 8 kHz, whose header
    /// claims `claimed_frames` frames.
    pub fn wav(frames: u32, claimed_frames: u32, channels: u16) -> Vec<u8> {
        let rate = 8000u32;
        let block = 2 * u32::from(channels);
        let data_len = claimed_frames * block;
        let mut v = Vec::new();
        v.extend_from_slice(b"RIFF");
        v.extend_from_slice(&(36 + data_len).to_le_bytes());
        v.extend_from_slice(b"WAVEfmt ");
        v.extend_from_slice(&16u32.to_le_bytes());
        v.extend_from_slice(&1u16.to_le_bytes());
        v.extend_from_slice(&channels.to_le_bytes());
        v.extend_from_slice(&rate.to_le_bytes());
        v.extend_from_slice(&(rate * block).to_le_bytes());
        v.extend_from_slice(&(block as u16).to_le_bytes());
        v.extend_from_slice(&16u16.to_le_bytes());
        v.extend_from_slice(b"data");
        v.extend_from_slice(&data_len.to_le_bytes());
        v.resize(v.len() + (frames * block) as usize, 0);
        v
    }

    #[test]
    fn a_wav_plays_as_long_as_its_samples() {
        let a = read(Bytes::from(wav(8000 * 3 / 2, 8000 * 3 / 2, 2)), Some("a.wav"), 7200).unwrap();
        assert!((a.seconds - 1.5).abs() < 0.01, "{a:?}");
        assert_eq!((a.whole_seconds(), a.channels), (2, 2));
    }

    #[test]
    fn claims_the_packets_do_not_back_are_refused() {
        // Ten hours claimed, one second held.
        let e = read(Bytes::from(wav(8000, 8000 * 36_000, 1)), None, 7200).unwrap_err();
        assert!(e.contains("claims"), "{e}");
        // Truncated: two seconds claimed, one held.
        let e = read(Bytes::from(wav(8000, 16000, 1)), None, 7200).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        assert!(read(Bytes::from(wav(8000 * 3, 8000 * 3, 1)), None, 2).is_err());
        assert!(read(Bytes::new(), None, 7200).is_err());
        assert!(read(Bytes::from_static(b"hello, not audio at all"), None, 7200).is_err());
    }
}
