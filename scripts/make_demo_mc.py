"""Write suites/tasks/evalq_demo_mc/demo_mc.jsonl: the demo's multiple-choice task.

120 four-way questions written for evalq (general knowledge, opposites, young
animals, arithmetic), with answer positions shuffled by a fixed seed. Re-run
after editing the tables; the output is deterministic.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "suites" / "tasks" / "evalq_demo_mc" / "demo_mc.jsonl"

CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Canada": "Ottawa", "Australia": "Canberra",
    "Brazil": "Brasilia", "Argentina": "Buenos Aires", "Mexico": "Mexico City", "India": "New Delhi",
    "Portugal": "Lisbon", "Greece": "Athens", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki",
    "Poland": "Warsaw", "Austria": "Vienna", "Ireland": "Dublin", "Kenya": "Nairobi", "Peru": "Lima",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "South Korea": "Seoul", "Turkey": "Ankara",
    "the United Kingdom": "London", "the Netherlands": "Amsterdam",
}

OPPOSITES = {
    "hot": "cold", "up": "down", "big": "small", "fast": "slow", "happy": "sad", "light": "dark",
    "open": "closed", "early": "late", "full": "empty", "strong": "weak", "rich": "poor", "wet": "dry",
    "young": "old", "loud": "quiet", "hard": "soft", "high": "low", "thick": "thin", "win": "lose",
    "push": "pull", "buy": "sell", "true": "false", "first": "last", "inside": "outside",
    "remember": "forget", "arrive": "depart",
}

YOUNG = {
    "dog": "puppy", "cat": "kitten", "cow": "calf", "sheep": "lamb", "horse": "foal", "duck": "duckling",
    "frog": "tadpole", "bear": "cub", "kangaroo": "joey", "swan": "cygnet", "goose": "gosling",
    "pig": "piglet", "deer": "fawn", "owl": "owlet", "hen": "chick",
}

FACTS = [
    ("What color is the sky on a clear day?", "blue", ["green", "red", "brown"]),
    ("What color is fresh grass?", "green", ["blue", "purple", "orange"]),
    ("What color is fresh snow?", "white", ["black", "green", "red"]),
    ("Which planet is the largest in the solar system?", "Jupiter", ["Mercury", "Mars", "Venus"]),
    ("Which planet is closest to the Sun?", "Mercury", ["Neptune", "Saturn", "Jupiter"]),
    ("At how many degrees Celsius does water freeze?", "0", ["50", "100", "-40"]),
    ("At how many degrees Celsius does water boil at sea level?", "100", ["0", "37", "212"]),
    ("How many days are there in a week?", "seven", ["five", "ten", "twelve"]),
    ("How many months are there in a year?", "twelve", ["ten", "seven", "twenty"]),
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many legs does an insect have?", "six", ["eight", "four", "twelve"]),
    ("What is the chemical symbol for gold?", "Au", ["Ag", "Gd", "Go"]),
    ("What is the chemical symbol for water?", "H2O", ["CO2", "O2", "NaCl"]),
    ("What gas do plants take in from the air to make food?", "carbon dioxide", ["helium", "neon", "hydrogen"]),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", ["the Indian Ocean", "the Arctic Ocean", "the Baltic Sea"]),
    ("Which animal is known as the king of the jungle?", "the lion", ["the rabbit", "the sheep", "the mouse"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("Which day comes after Monday?", "Tuesday", ["Sunday", "Friday", "Thursday"]),
    ("Which month comes after January?", "February", ["March", "December", "June"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "salt"]),
    ("Which organ pumps blood through the body?", "the heart", ["the lungs", "the stomach", "the skin"]),
    ("What do we use to see?", "our eyes", ["our ears", "our knees", "our elbows"]),
    ("Which star is at the center of our solar system?", "the Sun", ["the Moon", "Mars", "Polaris"]),
    ("Who wrote the play Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Jane Austen", "Mark Twain"]),
]

NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
                "nineteen", "twenty"]


def _pick_others(rng: random.Random, pool: list[str], right: str, k: int = 3) -> list[str]:
    return rng.sample([x for x in pool if x != right], k)


def build() -> list[dict]:
    rng = random.Random(20261122)
    items: list[tuple[str, str, list[str], str]] = []
    capitals = list(CAPITALS.values())
    for country, city in CAPITALS.items():
        items.append((f"What is the capital of {country}?", city, _pick_others(rng, capitals, city), "capitals"))
    opposite_words = list(OPPOSITES.values())
    for word, opposite in OPPOSITES.items():
        items.append((f"What is the opposite of \"{word}\"?", opposite, _pick_others(rng, opposite_words, opposite), "opposites"))
    young_words = list(YOUNG.values())
    for animal, young in YOUNG.items():
        items.append((f"What is a young {animal} called?", young, _pick_others(rng, young_words, young), "young_animals"))
    for question, right, wrong in FACTS:
        items.append((question, right, wrong, "facts"))
    pairs = [(a, b) for a in range(1, 11) for b in range(1, 11)]
    for a, b in rng.sample(pairs, 25):
        right = a + b
        wrong = rng.sample([x for x in range(max(0, right - 4), right + 5) if x != right and x <= 20], 3)
        items.append((f"What is {NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]}?", NUMBER_WORDS[right],
                      [NUMBER_WORDS[w] for w in wrong], "arithmetic"))
    docs = []
    for i, (question, right, wrong, category) in enumerate(items):
        choices = [right] + list(wrong)
        rng.shuffle(choices)
        docs.append({"id": i, "category": category, "question": question, "choices": choices,
                     "answer": choices.index(right)})
    return docs


def main() -> None:
    docs = build()
    assert len(docs) >= 100, len(docs)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    print(f"wrote {len(docs)} items to {OUT}")


if __name__ == "__main__":
    main()
