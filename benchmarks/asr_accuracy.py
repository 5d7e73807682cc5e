"""ASR accuracy on a corpus generated with espeak-ng: word and character error rate of free sentences.

Korean sentences a citizen might say, spoken by several espeak-ng voices and speeds, at 8 kHz
(telephone) and 16 kHz, transcribed by the service's SpeechRecognizer with the packaged model.
Prints WER/CER per condition beside the 16 kHz figure (the same speech without the telephone band
limit). jiwer computes the error rates. Bounded: 2–3 minutes on 2 cores.

    .venv/bin/python benchmarks/asr_accuracy.py
"""
from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import jiwer  # noqa: E402

from asr import SpeechRecognizer  # noqa: E402
from tests.support.speech import synthesize  # noqa: E402

SENTENCES = [
    "버스 정류장 앞에 하수도가 막혔어요",
    "보도블록이 깨져서 위험합니다",
    "음식점 위생 상태가 나빠요",
    "밤마다 공사 소리가 너무 커요",
    "가로등이 꺼져 있어서 어두워요",
    "버스가 정류장에 서지 않아요",
    "공원에 쓰레기가 많이 쌓여 있어요",
    "주차 문제로 신고하고 싶습니다",
]
VOICES = ["ko", "ko+f3"]
SPEEDS = [120, 150]
RATES = [8000, 16000]


async def main() -> None:
    """Synthesize the corpus, transcribe it, print the table."""
    started = time.monotonic()
    recognizer = await SpeechRecognizer.load(workers=2)
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="asr-accuracy-") as tmp:
            for rate in RATES:
                for voice in VOICES:
                    for speed in SPEEDS:
                        refs, hyps = [], []
                        for i, text in enumerate(SENTENCES):
                            wav = synthesize(text, Path(tmp) / f"{rate}-{voice}-{speed}-{i}.wav", voice=voice,
                                             rate=rate, speed=speed, pad_seconds=0.5)
                            result = await recognizer.transcribe_file(wav)
                            refs.append(text)
                            hyps.append(result.text.strip() or "<empty>")
                        rows.append((rate, voice, speed, jiwer.wer(refs, hyps), jiwer.cer(refs, hyps), hyps[0]))
    finally:
        await recognizer.aclose()
    print(f"ASR accuracy, espeak-ng Korean, {len(SENTENCES)} sentences per condition "
          f"({time.monotonic() - started:.0f} s)")
    print(f"{'rate':>6} {'voice':>6} {'speed':>5} {'WER':>6} {'CER':>6}  {'WER@16k (baseline)':>18}  example")
    base = {(v, s): w for r, v, s, w, _, _ in rows if r == 16000}
    for rate, voice, speed, wer, cer, example in rows:
        print(f"{rate:>6} {voice:>6} {speed:>5} {wer:>6.2f} {cer:>6.2f}  {base[(voice, speed)]:>18.2f}  {example[:30]}")


if __name__ == "__main__":
    asyncio.run(main())
