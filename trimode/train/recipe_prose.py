"""Prose prompts for distillation (``trimode make-prompts --kind prose``): everyday questions,
explanations, advice and short creative writing over a wide topic list.

Why a source of its own: the mixed prompts' chat share comes from 7 templates over 34 mostly
technical topics (238 distinct prompts), so the drafter saw little free prose, and on the
held-out chat prompts it accepted about half of what it accepted on code and math (teacher-forced
accepted drafts per block of 8: 1.05 on "Explain why leaves change colour in autumn." against
2.0 and 2.6 on the demo's code and math prompts, step-1080 delta). The model's own answers to
these prompts are the training text, so what matters is that the answers cover many subjects and
registers, not that the prompts read naturally.

No topic here is the subject of a bundled eval-split chat prompt (autumn leaves, tea, floating
ice, compilers, lighthouses, RAM and disks, APIs, rainy days, party invitations, cooking on a
budget); :func:`trimode.train.recipe_prompts.check_no_leak` also refuses any prompt equal to an
eval prompt.
"""

from __future__ import annotations

import random

TEMPLATES = [
    "Tell me about {t}.", "What are three interesting facts about {t}?", "Explain {t} to a ten-year-old.",
    "Write a short paragraph about {t}.", "What should a beginner know about {t}?", "Write a haiku about {t}.",
    "Write a short story that involves {t}.", "Give a brief history of {t}.", "What are the pros and cons of {t}?",
    "Describe {t} in three sentences.", "Write a short social media post about {t}.",
    "Create a short quiz with three questions about {t}, and give the answers.",
    "Write a short dialogue between two friends talking about {t}.",
    "Summarize what you know about {t} in five bullet points.", "Explain a common misconception about {t}.",
    "How would you teach {t} to a group of students?", "Give me a fun analogy for {t}.",
    "What is the most surprising thing about {t}?", "Write a limerick about {t}.",
    "Why do people find {t} interesting?", "Write an encyclopedia-style introduction to {t}.",
    "List five questions a curious child might ask about {t}, with short answers.",
]

TOPICS = [
    # nature and science
    "volcanoes", "earthquakes", "ocean tides", "the phases of the moon", "rainbows", "thunderstorms", "snowflakes",
    "glaciers", "coral reefs", "deserts", "rainforests", "honeybees", "bird migration", "octopuses", "whales",
    "dinosaurs", "fossils", "the human heart", "the immune system", "vaccines", "sleep and dreams", "digestion",
    "DNA", "evolution", "gravity", "magnets", "static electricity", "batteries", "solar panels", "wind turbines",
    "black holes", "the planet Mars", "comets", "the speed of light", "sound waves", "the periodic table",
    "chemical reactions", "bacteria", "mushrooms", "photosynthesis in algae", "the greenhouse effect", "recycling",
    "composting", "clean drinking water", "rivers", "mountains", "the northern lights", "penguins", "ants",
    # technology
    "the internet", "Wi-Fi", "strong passwords", "encryption", "GPS navigation", "smartphone cameras",
    "spreadsheets", "backing up files", "cloud storage", "open-source software", "email spam", "machine learning",
    "video games", "3D printing", "electric cars", "robots", "search engines", "QR codes", "the first computers",
    "keyboards", "touch screens", "podcasts", "online privacy",
    # everyday life
    "packing for a trip", "saving money on groceries", "job interviews", "writing a resume",
    "making friends in a new city", "staying focused while studying", "morning routines",
    "moving to a new apartment", "caring for a dog", "adopting a cat", "first aid for small cuts",
    "bicycle maintenance", "baking bread", "making pancakes", "growing tomatoes", "houseplants", "running a marathon",
    "learning to swim", "playing the guitar", "drawing portraits", "taking better photos", "keeping a journal",
    "reading more books", "reducing stress", "drinking enough water", "stretching", "camping", "birdwatching",
    "volunteering", "public libraries", "board games", "knitting", "chess", "recycling at home", "carpooling",
    # history and culture
    "the printing press", "Roman roads", "the pyramids of Egypt", "the invention of the telephone",
    "the history of the bicycle", "the Olympic Games", "ancient Greek theatre", "museums", "old maps",
    "the Silk Road", "castles", "the first airplanes", "the moon landing", "jazz music", "folk tales", "pottery",
    "calendars", "coins and paper money", "the postal service",
]

TASKS = [
    "Write a thank-you note to a neighbour who watered my plants while I was away.",
    "Write a short apology to a friend for missing their birthday dinner.",
    "Draft a message to my landlord about a leaking kitchen tap.",
    "Write a short speech to welcome new members to a hiking club.",
    "Give me a packing list for a weekend at the beach.",
    "Suggest five names for a small bakery that sells sourdough bread.",
    "Write a product description for a reusable water bottle.",
    "Give me a simple weekly plan to start running.",
    "How can I keep my desk tidy when I work from home?",
    "What are some polite ways to end a long phone call?",
    "Write a short bedtime story about a sleepy dragon.",
    "Write a short poem about the first day of spring.",
    "Describe a busy train station at rush hour.",
    "Describe the taste of a fresh strawberry to someone who has never had one.",
    "What is the difference between weather and climate?",
    "What is the difference between a virus and a bacterium?",
    "What is the difference between a lake and a pond?",
    "What is the difference between speed and velocity?",
    "Why do cats purr?", "Why is the sea salty?", "Why do we yawn?", "Why do onions make people cry?",
    "How do airplanes stay in the air?",
    "How does a refrigerator keep food cold?", "How do noise-cancelling headphones work?",
    "How does a microwave oven heat food?", "How do birds know where to fly in winter?",
    "Give three tips for giving a good presentation at work.",
    "Give three ideas for a fun weekend with friends who like the outdoors.",
    "Give me three easy recipes that use eggs.",
    "Suggest a title for a short story about a lost umbrella.",
    "Suggest a short, catchy slogan for a neighbourhood clean-up day.",
    "Write a short review of an imaginary science-fiction film.",
    "Write a short letter to your future self.",
    "Explain how to change a flat bicycle tyre, step by step.",
    "Explain how to plant a tree, step by step.",
    "Explain how to write a good email subject line.",
    "Summarize the story of a tortoise and a hare race in three sentences.",
    "Write a short motivational message for someone starting a new job.",
    "What are good habits for keeping a smartphone battery healthy?",
    "Describe a perfect picnic in a park.",
    "What makes a good team leader?",
    "What are some ways to learn new vocabulary in a foreign language?",
    "Write a short note inviting coworkers to a lunch on Friday.",
    "Give a short explanation of why exercise is good for the brain.",
    "Explain what a budget is and how to make a simple one.",
    "Explain the rules of tic-tac-toe.",
    "Write a two-paragraph story about a robot that learns to paint.",
    "Describe the sound of rain on a tin roof.",
]


def prose_prompts(count: int, rng: random.Random) -> list[dict]:
    """``count`` prompts (fewer if the lists run out): the tasks, then template x topic pairs."""
    pairs = [(t, topic) for t in TEMPLATES for topic in TOPICS]
    rng.shuffle(pairs)
    out = [{"prompt": task, "kind": "prose", "source": f"task:{i}"} for i, task in enumerate(TASKS)]
    out += [{"prompt": t.format(t=topic), "kind": "prose", "source": "template"} for t, topic in pairs]
    rng.shuffle(out)
    return out[:count]
