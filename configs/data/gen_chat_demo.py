#!/usr/bin/env python3
"""Writes chat_demo.jsonl: a few hundred short gold conversations in MyPT's
JSONL schema ({"system": ..., "messages": [{"role", "content"}, ...]}) with
simple, regular tasks a tiny model can visibly learn: arithmetic, capitals,
word reversal and greetings. Deterministic (fixed seed, stdlib only):

    python3 configs/data/gen_chat_demo.py > configs/data/chat_demo.jsonl
"""
import json
import random
import sys

rng = random.Random(20240601)
SYSTEM = "You are MyPT."

CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Austria", "Vienna"), ("Switzerland", "Bern"), ("Poland", "Warsaw"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Ireland", "Dublin"), ("Greece", "Athens"), ("Hungary", "Budapest"), ("Japan", "Tokyo"),
    ("China", "Beijing"), ("India", "New Delhi"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
    ("Canada", "Ottawa"), ("Mexico", "Mexico City"), ("Brazil", "Brasilia"), ("Argentina", "Buenos Aires"),
    ("Peru", "Lima"), ("Australia", "Canberra"), ("Russia", "Moscow"), ("Turkey", "Ankara"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"),
]
WORDS = [
    "apple", "river", "garden", "planet", "silver", "window", "rocket", "pencil", "forest", "guitar",
    "candle", "bridge", "winter", "yellow", "mirror", "castle", "dragon", "coffee", "button", "island",
    "tiger", "cloud", "stone", "music", "lemon", "house", "train", "paper", "ocean", "light",
]
GREETINGS = [
    ("Hello!", "Hello! How can I help you today?"),
    ("Hi there", "Hi! What can I do for you?"),
    ("Good morning", "Good morning! How can I help?"),
    ("Thanks!", "You're welcome!"),
    ("Who are you?", "I am MyPT, a small assistant."),
    ("Bye", "Goodbye! Have a nice day."),
]


def conv(*turns):
    msgs = []
    for i, t in enumerate(turns):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": t})
    return {"system": SYSTEM, "messages": msgs}


def arithmetic():
    a, b = rng.randint(0, 20), rng.randint(0, 20)
    if rng.random() < 0.6:
        return conv(f"What is {a} + {b}?", f"{a} + {b} = {a + b}.")
    a, b = max(a, b), min(a, b)
    return conv(f"What is {a} - {b}?", f"{a} - {b} = {a - b}.")


def capital():
    country, city = rng.choice(CAPITALS)
    q = rng.choice([f"What is the capital of {country}?", f"Name the capital of {country}.",
                    f"Which city is the capital of {country}?"])
    return conv(q, f"The capital of {country} is {city}.")


def reverse():
    w = rng.choice(WORDS)
    return conv(f"Reverse the word: {w}", w[::-1])


def greeting():
    q, a = rng.choice(GREETINGS)
    return conv(q, a)


def multi_turn():
    q, a = rng.choice(GREETINGS[:3])
    c2 = rng.choice([arithmetic, capital, reverse])()
    return conv(q, a, c2["messages"][0]["content"], c2["messages"][1]["content"])


rows = []
for make, n in [(arithmetic, 130), (capital, 100), (reverse, 80), (greeting, 30), (multi_turn, 40)]:
    rows += [make() for _ in range(n)]
rng.shuffle(rows)
for r in rows:
    sys.stdout.write(json.dumps(r, ensure_ascii=False) + "\n")
