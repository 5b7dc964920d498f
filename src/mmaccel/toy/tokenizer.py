"""A small byte-level BPE tokenizer for the toy model.

Byte-level BPE encodes any text (every byte is in the base alphabet) and decodes it back exactly, while the
merges learned from the shapes-world corpus make every question word a single token. The corpus is generated from
a fixed seed, so the tokenizer is the same on every build.

Letters and digits that stand alone (option letters, counts, sign texts such as ``K7``) are one token per
character, and the space before them is a token of its own: `` K7`` is ``Ġ K 7``. So the option letter ``A`` of
``A. red`` and the answer `` A`` end in the same token, and a sign character is the same token wherever it stands;
with a merged ``ĠA`` the model would have to learn two tokens per letter and per character.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from mmaccel.toy.font import CHARACTERS
from mmaccel.toy.questions import (
    OPTION_SUFFIX,
    POPE_SUFFIX,
    QUESTION_TYPES,
    SHORT_ANSWER,
    YES_NO_SUFFIX,
    choose_suffix,
    sample_example,
)

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN = "<pad>", "<s>", "</s>", "<unk>", "<image>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, IMAGE_TOKEN)
IMAGE_TOKEN_ID = SPECIAL_TOKENS.index(IMAGE_TOKEN)  # 4
VOCAB_SIZE = 640
CORPUS_SEED = 1234
# A space before a standalone run of one or two capitals or digits is split off (isolated) before byte-level BPE.
STANDALONE_SPACE = r" (?=[A-Z0-9]{1,2}\b)"

# Common benchmark instructions, so that they cost few tokens and the model sees them as familiar words.
EXTRA_TEXT: tuple[str, ...] = (
    SHORT_ANSWER,
    POPE_SUFFIX,
    YES_NO_SUFFIX,
    OPTION_SUFFIX,
    "Answer the question with Yes or No.",
    "Answer with the option letter from the given choices directly.",
    "Please answer the question with a single word.",
    "USER: ASSISTANT: Question: Context: Options: Hint: The image shows",
)


def corpus(num_examples: int = 3000, seed: int = CORPUS_SEED) -> Iterator[str]:
    """Chat-formatted questions and answers of every type, plus benchmark instructions."""
    rng = np.random.default_rng(seed)
    for index in range(num_examples):
        _, question = sample_example(QUESTION_TYPES[index % len(QUESTION_TYPES)], rng)
        yield f"USER: \n{question.prompt(choose_suffix(question, rng))} ASSISTANT: {question.answer}"
    for _ in range(20):
        yield from EXTRA_TEXT
        yield " ".join(CHARACTERS)


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train the byte-level BPE on :func:`corpus` and wrap it as a Hugging Face fast tokenizer."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(STANDALONE_SPACE), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
        model_max_length=512,
    )
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != IMAGE_TOKEN_ID:
        raise RuntimeError("the image token must have id 4")
    return tokenizer
