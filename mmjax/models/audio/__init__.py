"""Audio front ends of the audio models (the log-mel spectrogram Whisper and CLAP read)."""
