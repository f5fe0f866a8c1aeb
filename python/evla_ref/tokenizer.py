"""The tiny SentencePiece tokenizer of evla's test models, trained deterministically.

Llama conventions: unk=0, BOS=1, EOS=2, no pad; identity normalisation, no
removal of extra whitespace and a dummy prefix (so "Out: " ends in the lone
"▁" piece, like Llama's 29871). "\n" is a user-defined piece because the
CogACT template contains it and byte fallback is off.
"""
import io
import itertools

import sentencepiece as spm

# CogACT's prompt template, as the fixture configs carry it (the reference and the
# runtime read it from config.json; src/model/config.h holds the runtime's default).
TEMPLATE = "In: What action should the robot take to {instruction}?\nOut: "

_VERBS = ["pick up", "grab", "lift", "move", "push", "put", "place", "stack", "wipe", "open", "close"]
_COLOURS = ["red", "green", "blue", "yellow", "black", "white", "orange", "purple"]
_OBJECTS = ["block", "cube", "bowl", "cup", "can", "spoon", "carrot", "eggplant", "sponge", "towel",
            "banana", "apple", "bottle", "plate", "marker"]
_PLACES = ["on the plate", "in the bowl", "into the sink", "on the towel", "in the drawer",
           "to the left", "to the right", "near the cup", "on top of the block", "in the basket"]
_FIXED = ["open the top drawer", "close the middle drawer", "open the fridge door", "close the microwave",
          "turn on the faucet", "turn off the light", "flip the cup upright", "knock the can over",
          "fold the cloth", "sweep the beans into the dustpan", "put the spoon on the towel",
          "put the carrot on the plate", "stack the green block on the yellow block",
          "put the eggplant in the basket", "move the pot to the stove", "pick coke can"]


def corpus():
    """A few hundred robot instructions (fixed order), some wrapped in the prompt template."""
    lines = list(_FIXED)
    combos = itertools.product(_VERBS, _COLOURS, _OBJECTS, _PLACES)
    for i, (v, c, o, p) in enumerate(combos):
        if i % 41 == 0:  # a deterministic, spread-out subset
            needs_place = v in ("put", "place", "move", "stack", "push")
            lines.append(f"{v} the {c} {o}" + (f" {p}" if needs_place else ""))
    capitalised = [s[0].upper() + s[1:] for s in lines[::5]]
    prompts = [TEMPLATE.replace("{instruction}", s) for s in lines[::3]]
    return lines + capitalised + prompts


def train(vocab_size=256, sentences=None):
    """Returns the serialized tokenizer.model bytes (byte-identical on every
    run) trained on `sentences` (default: this module's corpus), with Llama's
    conventions: unk 0, BOS 1, EOS 2, identity normalisation, dummy prefix."""
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences if sentences is not None else corpus()), model_writer=out,
        vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, byte_fallback=False,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        user_defined_symbols=["\n"], split_digits=True,
        num_threads=1, shuffle_input_sentence=False, input_sentence_size=0, minloglevel=2)
    return out.getvalue()
