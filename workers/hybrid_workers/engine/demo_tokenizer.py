"""The demo model's tokenizer: a byte-level BPE trained locally on a deterministic embedded corpus."""

from __future__ import annotations

import random

# A short English text so that common words and punctuation become single tokens.
_SEED_TEXT = """\
HybridInference splits the work of a language model between two machines. Prefill reads the whole
prompt at once and is limited by arithmetic: it belongs on the machine with the most floating point
operations per second. Decode produces one token at a time and reads every weight and the whole key
value cache for each token: it belongs on the machine with the most memory bandwidth. The key and
value tensors of a layer are final as soon as that layer has run, so they can travel over the network
while the next layer computes. Only the last layer's transfer is left exposed when sending a layer
takes no longer than computing one. The answer is: yes, it works. Hello, world! How are you today?
I am fine, thank you. What is the capital of France? Paris is the capital of France. One, two, three,
four, five, six, seven, eight, nine, ten. A quick brown fox jumps over the lazy dog.
"""

_COMMON_WORDS = (
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "was",
    "by",
    "at",
    "be",
    "this",
    "from",
    "or",
    "an",
    "are",
    "which",
    "you",
    "we",
    "they",
    "model",
    "layer",
    "token",
    "prompt",
    "cache",
    "prefill",
    "decode",
    "machine",
    "network",
    "memory",
    "time",
    "first",
    "last",
    "one",
    "two",
)
_ONSETS = ("", "b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w")
_ONSETS2 = ("st", "tr", "pl", "ch", "sh", "th", "br", "gr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "ie")
_CODAS = ("", "n", "r", "s", "t", "l", "m", "nd", "st", "ng", "ck")

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
# Role markers of the chat template; single tokens so that a chat prompt stays short.
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def _invented_words(rng: random.Random, count: int) -> list[str]:
    """Pronounceable pseudo-words: enough distinct pairs for BPE to reach a 32k vocabulary."""
    syllable = lambda: rng.choice(_ONSETS + _ONSETS2) + rng.choice(_VOWELS) + rng.choice(_CODAS)  # noqa: E731
    return ["".join(syllable() for _ in range(rng.randint(1, 3))) for _ in range(count)]


def training_corpus(sentences: int, seed: int = 0) -> list[str]:
    """A deterministic list of lines: the seed text, then `sentences` generated sentences."""
    rng = random.Random(seed)
    words = _invented_words(rng, 20_000)
    lines = _SEED_TEXT.splitlines()
    for _ in range(sentences):
        picks = [rng.choice(_COMMON_WORDS) if rng.random() < 0.35 else rng.choice(words) for _ in range(14)]
        sentence = " ".join(picks[: rng.randint(5, 14)]).capitalize() + rng.choice(".,.?!;:")
        if rng.random() < 0.1:
            sentence += f" {rng.randint(0, 9999)}"
        lines.append(sentence)
    return lines


def train_tokenizer(vocab_size: int, sentences: int):  # -> PreTrainedTokenizerFast
    """Train the byte-level BPE (deterministic: same arguments, same vocabulary and merges) and wrap it.

    The wrapper adds `<s>` in front of every encoded text (as Llama does) and carries the chat
    template used by the decode worker's chat endpoint.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS, *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(sentences), trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=list(ROLE_TOKENS),
        chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 30,
    )
