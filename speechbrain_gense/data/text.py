"""Sentences for the embedded corpus, composed by a small English grammar.

No text corpus ships with the machines this project targets, so the transcripts
are composed here: a few dozen sentence patterns (statements, questions,
requests, reported speech, numbers and times) filled from a vocabulary of
about 440 common words, all of which are in the CMU pronouncing dictionary
that pocketsphinx ships (a test checks this). The grammar gives every word a
context, so a token language model has real structure to learn, and the draw
is deterministic for a seed.
"""

import random

WORDS = {
    "person": "john mary peter anna david sarah paul linda james susan mark "
    "helen robert alice thomas laura george emily frank julia the_teacher "
    "the_doctor the_farmer the_driver my_brother my_sister our_neighbor "
    "the_old_man the_young_woman the_captain the_baker her_father his_mother",
    "noun": "book table chair window door letter garden river bottle basket "
    "coat hat lamp clock map ticket picture bridge road horse dog cat bird "
    "apple orange bread cake cup plate knife spoon box bag key phone radio "
    "camera bicycle boat train car truck engine wheel rope ladder bucket "
    "shirt shoe glove ring stone shell flower tree leaf candle blanket "
    "pillow mirror bell drum guitar piano paper pencil envelope package "
    "report message song story question answer plan idea",
    "plural": "books chairs windows letters apples oranges cups plates boxes "
    "bags keys pictures horses dogs cats birds flowers trees stones shells "
    "candles blankets tickets bottles baskets coats shoes gloves rings boats "
    "cars bicycles pencils songs stories questions plans",
    "adj": "old new small large heavy light bright dark warm cold quiet "
    "loud clean dirty empty full wet dry soft hard red blue green yellow "
    "black white brown golden silver wooden broken strange simple famous "
    "careful happy tired busy early late long short sharp smooth sweet",
    "place": "kitchen garden station market library office school church "
    "harbor village city park hotel bakery hospital museum beach forest "
    "valley hill farm bridge corner street square lake island theater "
    "factory shop castle tower",
    "prep": "near behind under beside inside outside above below across "
    "along against toward",
    "verb": "carry paint open close clean build find move sell buy fix "
    "read write bring keep watch wash fold hide lift pull push check "
    "cook count follow",
    "verb_past": "carried painted opened closed cleaned built found moved "
    "sold bought fixed read wrote brought kept watched washed folded hid "
    "lifted pulled pushed checked cooked counted followed",
    "verb_ing": "carrying painting opening closing cleaning building "
    "finding moving selling buying fixing reading writing bringing "
    "keeping watching washing folding hiding lifting pulling pushing "
    "checking cooking counting following",
    "intrans_past": "arrived waited laughed smiled listened worked slept "
    "walked danced talked stayed returned rested agreed",
    "time": "this_morning this_evening last_night last_week yesterday today "
    "tomorrow on_monday on_tuesday on_friday on_sunday at_noon at_midnight "
    "before_dinner after_lunch in_the_spring in_the_winter every_day",
    "number": "two three four five six seven eight nine ten eleven twelve "
    "twenty thirty forty fifty hundred",
    "weather": "cold warm windy sunny cloudy rainy dry calm",
    "feeling": "glad sorry sure surprised worried pleased",
    "adverb": "slowly quickly carefully quietly gently easily suddenly "
    "finally rarely often",
    "clock": "one two three four five six seven eight nine ten eleven twelve",
}
VOCAB = {k: v.split() for k, v in WORDS.items()}

PATTERNS = [
    "the {adj} {noun} is {prep} the {adj} {noun}",
    "{person} {verb_past} the {adj} {noun} {time}",
    "{person} {verb_past} a {adj} {noun} in the {place}",
    "did you see the {noun} {prep} the {place}",
    "please {verb} the {noun} before {person} comes back",
    "{person} said that the {noun} was too {adj}",
    "we will {verb} the {adj} {plural} {time}",
    "there were {number} {adj} {plural} {prep} the {noun}",
    "it was {weather} when {person} {intrans_past} at the {place}",
    "{person} was {verb_ing} the {noun} {adverb}",
    "why did {person} {verb} the {noun} {time}",
    "the {plural} in the {place} are {adj} and {adj}",
    "{person} {intrans_past} {adverb} near the {adj} {place}",
    "i am {feeling} that {person} {verb_past} the {plural}",
    "the train leaves at {clock} o'clock {time}",
    "put the {adj} {noun} {prep} the {noun} and {verb} the {plural}",
    "{person} and {person} {intrans_past} in the {place} {time}",
    "how many {plural} did {person} {verb} {time}",
    "the {noun} from the {place} looks {adj} in the {adj} light",
    "after the storm the {place} was {adj} and {weather}",
    "{person} {adverb} {verb_past} {number} {plural} for the {place}",
    "could you {verb} the {noun} for {person}",
    "she kept the {adj} {noun} {prep} her {noun}",
    "he found {number} {plural} {prep} the old {place}",
    "{person} never {verb_past} a {noun} so {adj}",
    "our {noun} was {adj} but the {plural} were {adj}",
    "the {adj} {place} opens at {clock} {time}",
    "when the {noun} is {adj} {verb} it {adverb}",
    "{person} will {verb} the {noun} if the weather is {weather}",
    "they {intrans_past} {prep} the {place} until {clock} o'clock",
]


def compose_sentence(rng):
    """Draws one sentence from the grammar with ``rng`` (``random.Random``).

    Example
    -------
    >>> s = compose_sentence(random.Random(0))
    >>> isinstance(s, str) and len(s.split()) >= 4
    True
    """
    pattern = rng.choice(PATTERNS)
    out = []
    for chunk in pattern.split(" "):
        if chunk.startswith("{") and chunk.endswith("}"):
            out.append(rng.choice(VOCAB[chunk[1:-1]]).replace("_", " "))
        else:
            out.append(chunk)
    return " ".join(out)


def compose_sentences(count, seed, avoid=()):
    """Draws ``count`` distinct sentences (none of them in ``avoid``).

    Example
    -------
    >>> a = compose_sentences(5, seed=1)
    >>> a == compose_sentences(5, seed=1), len(set(a))
    (True, 5)
    """
    rng = random.Random(seed)
    seen = set(avoid)
    out = []
    while len(out) < count:
        s = compose_sentence(rng)
        if s not in seen:
            seen.add(s)
            out.append(s)
    return out


def normalize_words(text):
    """Upper-case words without punctuation, the transcript convention.

    Example
    -------
    >>> normalize_words("The train leaves at two o'clock!")
    "THE TRAIN LEAVES AT TWO O'CLOCK"
    """
    keep = "".join(c if c.isalnum() or c in " '" else " " for c in text)
    return " ".join(keep.upper().split())


def vocabulary():
    """Every word the grammar can produce (lower case)."""
    words = set()
    for values in VOCAB.values():
        for v in values:
            words.update(v.split("_"))
    for p in PATTERNS:
        words.update(w for w in p.split() if not w.startswith("{"))
    return words
