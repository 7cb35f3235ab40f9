"""Hand-written conversation pieces for make_demo_chats.py (original text written for fastsae)."""

SYSTEM_PROMPTS = {
    "any": [
        "You are a helpful assistant.",
        "You are a concise assistant. Keep answers short unless asked for detail.",
        "You are a friendly assistant who explains things clearly and checks that the user is happy with the answer.",
    ],
    "coding": [
        "You are an experienced software engineer. Prefer simple, readable code and explain trade-offs briefly.",
        "You are a Python tutor for beginners. Explain each step.",
    ],
    "cooking": ["You are a home cooking assistant. Give practical, budget-friendly advice."],
    "travel": ["You are a travel planner. Be specific and practical."],
    "science": ["You are a science teacher. Use everyday examples."],
    "writing": ["You are a writing assistant with a warm, plain style."],
    "advice": ["You are a supportive coach. Be kind but practical."],
    "math": ["You are a patient math tutor. Show your working."],
    "trivia": ["You are a quiz host. Answer correctly and add one fun detail."],
}

CODE = [
    {
        "turns": [
            "How do I reverse a string in Python?",
            "The shortest way is slicing with a step of -1:\n\n```python\ntext = \"hello\"\nreversed_text = text[::-1]\nprint(reversed_text)  # olleh\n```\n\n`text[::-1]` walks the string from the end to the start. If you prefer something more explicit, `''.join(reversed(text))` does the same thing.",
        ],
        "more": [
            [
                "Does that work for emoji too?",
                "Mostly, yes: Python strings are sequences of code points, so single-code-point emoji reverse fine. Emoji built from several code points (flags, skin tones, family emoji) get split apart, though. For those you'd need a library that understands grapheme clusters, such as `regex` with the `\\X` pattern.",
            ],
            [
                "Which one is faster?",
                "Slicing is usually a bit faster because it runs entirely in C and builds the new string in one go. For normal string sizes the difference doesn't matter; pick the one that reads best to you.",
            ],
        ],
    },
    {
        "turns": [
            "Write a function that counts how often each word appears in a text.",
            'Here\'s a version using `collections.Counter`:\n\n```python\nimport re\nfrom collections import Counter\n\ndef word_counts(text: str) -> Counter:\n    words = re.findall(r"[a-z\']+", text.lower())\n    return Counter(words)\n\ncounts = word_counts("The cat sat. The cat slept!")\nprint(counts.most_common(2))  # [(\'the\', 2), (\'cat\', 2)]\n```\n\nLowercasing first means "The" and "the" count as the same word, and the regular expression drops punctuation.',
            "Can I ignore words like 'the' and 'a'?",
            'Sure, filter them with a set of stop words:\n\n```python\nSTOP_WORDS = {"the", "a", "an", "and", "of", "to", "in"}\n\ndef word_counts(text: str) -> Counter:\n    words = re.findall(r"[a-z\']+", text.lower())\n    return Counter(w for w in words if w not in STOP_WORDS)\n```\n\nA set makes each lookup fast even if the list of stop words grows.',
        ],
    },
    {
        "turns": [
            "fizzbuzz in javascript please",
            '```javascript\nfor (let i = 1; i <= 100; i++) {\n  let out = "";\n  if (i % 3 === 0) out += "Fizz";\n  if (i % 5 === 0) out += "Buzz";\n  console.log(out || i);\n}\n```\n\nBuilding the string piece by piece means multiples of 15 print "FizzBuzz" without a separate check.',
        ],
    },
    {
        "turns": [
            "I have a list with duplicates and I want to remove them but keep the original order. How?",
            "Use a dict, since dicts keep insertion order:\n\n```python\nitems = [3, 1, 3, 2, 1, 5]\nunique = list(dict.fromkeys(items))\nprint(unique)  # [3, 1, 2, 5]\n```\n\n`set(items)` would also remove duplicates, but it doesn't preserve the order.",
        ],
        "more": [
            [
                "What if the items are dictionaries? I get a TypeError.",
                "Dictionaries aren't hashable, so they can't be dict keys or set members. Pick a field that identifies each item and track the ones you've seen:\n\n```python\nseen = set()\nunique = []\nfor row in rows:\n    key = row[\"id\"]\n    if key not in seen:\n        seen.add(key)\n        unique.append(row)\n```",
            ],
        ],
    },
    {
        "turns": [
            "Can you explain binary search and show an implementation?",
            "Binary search finds a value in a sorted list by repeatedly halving the range where it could be. Compare the target with the middle element: if it's smaller, keep the left half; if it's larger, keep the right half. Each step throws away half of what's left, so it takes about log2(n) steps.\n\n```python\ndef binary_search(items, target):\n    lo, hi = 0, len(items) - 1\n    while lo <= hi:\n        mid = (lo + hi) // 2\n        if items[mid] == target:\n            return mid\n        if items[mid] < target:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n    return -1\n```\n\nFor a million items that's at most 20 comparisons. In real code, the standard library's `bisect` module does this for you.",
            "Why do we need the list to be sorted?",
            "Because the method relies on knowing which side the target must be on. In a sorted list, if the middle element is smaller than the target, every element to its left is smaller too, so none of them can match. Without sorting, that conclusion is false and you'd have to check every element.",
        ],
    },
    {
        "turns": [
            "What's the SQL to get the 5 customers who spent the most?",
            "Assuming an `orders` table with `customer_id` and `amount` columns:\n\n```sql\nSELECT customer_id, SUM(amount) AS total_spent\nFROM orders\nGROUP BY customer_id\nORDER BY total_spent DESC\nLIMIT 5;\n```\n\nIf you also want their names, join the `customers` table on `customer_id`.",
            "yes show the join",
            "```sql\nSELECT c.name, SUM(o.amount) AS total_spent\nFROM orders AS o\nJOIN customers AS c ON c.id = o.customer_id\nGROUP BY c.id, c.name\nORDER BY total_spent DESC\nLIMIT 5;\n```\n\nGrouping by `c.id` as well as the name keeps two different customers with the same name apart.",
        ],
    },
    {
        "turns": [
            "I committed to the wrong branch in git. The commit isn't pushed. How do I move it?",
            "Assuming the commit is the latest one on the wrong branch:\n\n```bash\ngit log -1              # note the commit hash\ngit switch right-branch\ngit cherry-pick <hash>  # copy the commit here\ngit switch wrong-branch\ngit reset --hard HEAD~1 # remove it from the wrong branch\n```\n\nCareful: `reset --hard` also throws away uncommitted changes on that branch, so commit or stash them first.",
        ],
        "more": [
            [
                "What if I already pushed it?",
                "Then don't rewrite the shared branch. Cherry-pick the commit onto the right branch as above, and on the wrong branch run `git revert <hash>`, which adds a new commit that undoes it. Everyone else's history stays valid.",
            ],
        ],
    },
    {
        "turns": [
            "How do I read a CSV file in Python and compute the average of one column?",
            'With the standard library only:\n\n```python\nimport csv\n\nwith open("sales.csv", newline="") as f:\n    reader = csv.DictReader(f)\n    values = [float(row["price"]) for row in reader if row["price"]]\n\naverage = sum(values) / len(values)\nprint(f"Average price: {average:.2f}")\n```\n\n`DictReader` uses the header row as keys, so you can refer to the column by name. The `if row["price"]` skips empty cells.',
            "and with pandas?",
            '```python\nimport pandas as pd\n\ndf = pd.read_csv("sales.csv")\nprint(df["price"].mean())\n```\n\npandas skips missing values in `mean()` by default, so empty cells are handled for you.',
        ],
    },
    {
        "turns": [
            "Write a regex that checks if a string looks like an email address.",
            'A practical pattern:\n\n```python\nimport re\n\nEMAIL = re.compile(r"^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$")\n\nprint(bool(EMAIL.match("ana@example.org")))  # True\nprint(bool(EMAIL.match("not an email")))     # False\n```\n\nIt requires something before the @, a domain after it and a dot in the domain, with no spaces. Fully validating email addresses with a regex is notoriously hard; the reliable check is sending a confirmation message.',
        ],
    },
    {
        "turns": [
            "What's the difference between a list and a tuple in Python?",
            "The main difference is that lists are mutable and tuples are not:\n\n- A list can grow, shrink and change: `nums.append(4)`, `nums[0] = 10`.\n- A tuple is fixed once created; you'd build a new one instead.\n\nBecause tuples can't change, they can be used as dictionary keys and set members (if their contents are hashable too). By convention, lists hold many items of the same kind, while tuples group a fixed number of related values, like `(latitude, longitude)`.",
        ],
        "more": [
            [
                "Is a tuple faster?",
                "Slightly: creating a tuple and iterating over it is a little cheaper and it uses a bit less memory. It's rarely a reason to choose one over the other, though; choose based on whether the data should change.",
            ],
            ["ok thanks", "You're welcome! Happy coding."],
        ],
    },
    {
        "turns": [
            "My Python script says `ModuleNotFoundError: No module named 'requests'`. I installed it with pip though.",
            "That usually means pip installed it for a different Python than the one running your script. Check which interpreter you're using:\n\n```bash\npython -c \"import sys; print(sys.executable)\"\n```\n\nThen install with that exact interpreter:\n\n```bash\npython -m pip install requests\n```\n\nUsing `python -m pip` instead of plain `pip` guarantees they match. If you use a virtual environment, make sure it's activated in the terminal where you run the script.",
            "that fixed it, thanks!",
            "Glad it works! Virtual environments per project help avoid this kind of mix-up in the future.",
        ],
    },
    {
        "turns": [
            "Recursion vs iteration for factorial, which should I use?",
            "Both work:\n\n```python\ndef factorial_recursive(n):\n    return 1 if n <= 1 else n * factorial_recursive(n - 1)\n\ndef factorial_loop(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result\n```\n\nIn Python, prefer the loop: each recursive call adds a stack frame, and Python stops at about 1000 frames by default, so `factorial_recursive(5000)` raises a RecursionError. The recursive version is nice for explaining the idea; `math.factorial` is what you'd use in practice.",
        ],
    },
    {
        "turns": [
            "how do i find all files bigger than 100MB on linux",
            "Use `find` with a size filter:\n\n```bash\nfind / -type f -size +100M 2>/dev/null\n```\n\n`-size +100M` means larger than 100 MiB and `2>/dev/null` hides permission errors. To see the sizes sorted, pipe it into `du`:\n\n```bash\nfind / -type f -size +100M -exec du -h {} + 2>/dev/null | sort -rh | head -20\n```",
        ],
    },
    {
        "turns": [
            "Explain what a Python decorator is with a simple example.",
            'A decorator is a function that takes another function and returns a new function that adds some behaviour around it. The `@` syntax is shorthand for wrapping.\n\n```python\nimport time\nfrom functools import wraps\n\ndef timed(func):\n    @wraps(func)\n    def wrapper(*args, **kwargs):\n        start = time.perf_counter()\n        result = func(*args, **kwargs)\n        print(f"{func.__name__} took {time.perf_counter() - start:.3f}s")\n        return result\n    return wrapper\n\n@timed\ndef slow_sum(n):\n    return sum(range(n))\n\nslow_sum(10_000_000)\n```\n\n`@timed` above `slow_sum` is the same as writing `slow_sum = timed(slow_sum)`. `functools.wraps` keeps the original function\'s name and docstring.',
            "Can a decorator take arguments?",
            'Yes, add one more layer: a function that takes the arguments and returns the actual decorator.\n\n```python\ndef repeat(times):\n    def decorator(func):\n        @wraps(func)\n        def wrapper(*args, **kwargs):\n            for _ in range(times - 1):\n                func(*args, **kwargs)\n            return func(*args, **kwargs)\n        return wrapper\n    return decorator\n\n@repeat(3)\ndef greet():\n    print("hi")\n```',
        ],
    },
    {
        "turns": [
            "In JavaScript what's the difference between == and ===?",
            '`===` compares value and type without any conversion, while `==` converts the operands to a common type first. That conversion produces surprises:\n\n```javascript\n0 == "0"      // true\n0 == ""       // true\n"0" == ""     // false\nnull == undefined  // true\n0 === "0"     // false\n```\n\nMost style guides recommend always using `===` (and `!==`), except perhaps `x == null` to check for both null and undefined at once.',
        ],
    },
    {
        "turns": [
            "Can you review this? \n\ndef avg(xs):\n    return sum(xs) / len(xs)",
            'It\'s correct for non-empty lists, and nicely short. Two things to consider:\n\n1. An empty list raises `ZeroDivisionError`. Decide what should happen: raise a clearer error, or return `None` or `0.0`.\n2. A name like `mean` and a docstring make the intent clearer.\n\n```python\ndef mean(values):\n    """Arithmetic mean of a non-empty sequence of numbers."""\n    if not values:\n        raise ValueError("mean() of an empty sequence")\n    return sum(values) / len(values)\n```\n\nAlso, `statistics.mean` in the standard library already does this.',
        ],
    },
    {
        "turns": [
            "What does Big O notation mean, in plain words?",
            "Big O describes how the running time (or memory) of an algorithm grows as the input gets bigger, ignoring constant factors.\n\n- O(1): same time no matter the size, like looking up a key in a dict.\n- O(log n): grows very slowly, like binary search.\n- O(n): doubles when the input doubles, like scanning a list once.\n- O(n log n): good sorting algorithms.\n- O(n²): comparing every pair of items; fine for 100 items, painful for a million.\n\nIt's about the trend for large inputs, not the exact number of seconds.",
        ],
        "more": [
            [
                "So is O(n) always faster than O(n²)?",
                "For large enough inputs, yes. For small inputs an O(n²) algorithm with tiny constants can win. That's why, for example, some sorting libraries switch to insertion sort (O(n²)) for very short sublists.",
            ],
        ],
    },
    {
        "turns": [
            "How do I make an HTTP GET request in Python and parse JSON?",
            'With the `requests` library:\n\n```python\nimport requests\n\nresp = requests.get("https://api.example.com/items", params={"limit": 10}, timeout=10)\nresp.raise_for_status()\ndata = resp.json()\nfor item in data["items"]:\n    print(item["name"])\n```\n\n`raise_for_status()` turns HTTP errors like 404 into exceptions, and the `timeout` stops the call from hanging forever.',
        ],
    },
]

RECIPES = [
    {
        "turns": [
            "I have eggs, spinach, an onion and some cheese. What can I make for dinner?",
            "A spinach and cheese frittata would be perfect:\n\n1. Slice the onion and soften it in a little oil in an oven-safe pan, about 5 minutes.\n2. Add the spinach and stir until it wilts.\n3. Beat 6 eggs with salt, pepper and most of the cheese, then pour them over the vegetables.\n4. Cook on low heat for 5-6 minutes until the edges set.\n5. Scatter the rest of the cheese on top and put the pan under the grill for 2-3 minutes until golden.\n\nServe it with bread or a simple salad.",
        ],
        "more": [
            [
                "I don't have an oven-safe pan.",
                "No problem: once the edges are set, slide the frittata onto a plate, put the pan upside down over it, and flip both together so the uncooked side goes down. Cook for another 2-3 minutes.",
            ],
            [
                "Can I make it ahead for lunch?",
                "Yes. It keeps for 3 days in the fridge and is good cold or gently reheated. Cut it into wedges once it has cooled.",
            ],
        ],
    },
    {
        "turns": [
            "What's the secret to fluffy pancakes?",
            "A few things make the biggest difference:\n\n- Don't overmix: stir until the flour just disappears. Lumps are fine.\n- Let the batter rest 10 minutes so the baking powder starts working.\n- Use fresh baking powder.\n- Cook on medium heat and flip once, when bubbles appear on the surface and the edges look dry.\n\nSeparating the eggs and folding in whipped whites makes them extra airy if you want to go further.",
        ],
    },
    {
        "turns": [
            "Can I substitute butter with oil in a cake recipe?",
            "Usually yes. Use about three quarters of the amount: for 200 g butter, use roughly 150 ml of a neutral oil. The cake will be moister and keep longer, but it will taste less buttery and have a slightly denser crumb. Oil works best in chocolate, carrot and spice cakes; for a pound cake, where butter is the main flavour, I'd keep the butter.",
        ],
    },
    {
        "turns": [
            "How long should I boil an egg for a runny yolk?",
            "Lower a fridge-cold large egg into water that's already boiling and cook it for 6 minutes, then put it in cold water for a minute. For a jammy yolk that's just set at the edges, go for 7 minutes; hard-boiled is about 10.",
            "Why do my eggs crack when I put them in?",
            "The sudden temperature change and the egg hitting the bottom of the pan. Lower them gently with a spoon, and let very cold eggs sit in warm tap water for a couple of minutes first. Some people also prick the wide end with a pin to let the air pocket escape.",
        ],
    },
    {
        "turns": [
            "Give me a simple tomato sauce recipe for pasta.",
            "Basic tomato sauce for 4 people:\n\n- 2 tbsp olive oil\n- 2 garlic cloves, sliced\n- 1 can (400 g) chopped tomatoes\n- salt, a pinch of sugar, fresh basil\n\nWarm the oil over low heat and cook the garlic for a minute without letting it brown. Add the tomatoes, a good pinch of salt and the sugar, and simmer for 15-20 minutes until it thickens. Tear in the basil at the end. Toss with the pasta and a splash of the pasta water so the sauce clings.",
        ],
        "more": [
            [
                "Can I freeze it?",
                "Yes, it freezes very well for up to 3 months. Cool it completely and freeze it in portions so you only thaw what you need.",
            ],
            [
                "How do I make it spicy?",
                "Add a pinch of chilli flakes with the garlic, or a chopped fresh chilli. For a classic arrabbiata, be generous with the chilli and finish with parsley instead of basil.",
            ],
        ],
    },
    {
        "turns": [
            "I'm cooking for a vegan friend. Any easy main course ideas?",
            "Here are a few crowd-pleasers that don't feel like substitutes:\n\n1. Chickpea and sweet potato curry with coconut milk, served with rice.\n2. Mushroom and lentil ragù over pasta or polenta.\n3. Black bean tacos with avocado, pickled onions and lime.\n4. A big roasted vegetable tray bake with tahini dressing and couscous.\n\nDouble-check labels for hidden animal products: some breads contain milk or egg, and some stock cubes contain meat extracts.",
            "The curry sounds good. How do I make it?",
            "For 4 servings: fry a chopped onion in oil until soft, add 2 garlic cloves, a thumb of grated ginger and 2 tbsp curry paste (check it's vegan) and cook a minute. Add 2 diced sweet potatoes, a drained can of chickpeas, a can of coconut milk and a can of chopped tomatoes. Simmer for 20-25 minutes until the sweet potato is tender. Stir in a few handfuls of spinach and a squeeze of lime, and season with salt.",
        ],
    },
    {
        "turns": [
            "How do I keep fresh herbs from wilting so fast?",
            "Treat soft herbs like flowers: trim the stems, stand them in a glass of water and loosely cover the leaves with a bag in the fridge. Basil is the exception; keep it on the counter, because the cold turns it black. Hardy herbs like rosemary and thyme keep best wrapped in a slightly damp paper towel in a container in the fridge.",
        ],
    },
    {
        "turns": [
            "my bread always comes out dense. what am i doing wrong?",
            "The most common causes are:\n\n1. Not enough kneading, so the gluten can't hold the gas. The dough should be smooth and stretchy.\n2. Too little rising time. Let it roughly double in size; in a cool kitchen that can take 2 hours.\n3. Old or killed yeast. Water hotter than about 45°C damages yeast.\n4. Too much flour. A slightly sticky dough makes a lighter loaf.\n\nWhich kind of bread are you making? I can be more specific.",
            "Just a basic white sandwich loaf.",
            "Then try this: knead for a full 10 minutes (or until a small piece stretches thin enough to let light through), let it rise until doubled, shape it tightly, and let it rise again in the tin until it domes about 2 cm above the rim before baking. That second rise is often the step people cut short.",
        ],
    },
    {
        "turns": [
            "What can I do with overripe bananas besides banana bread?",
            'Plenty:\n\n- Freeze them in slices for smoothies or "nice cream" (blended frozen banana).\n- Mash them into pancake or oatmeal batter.\n- Make two-ingredient cookies with oats.\n- Bake them into muffins.\n- Caramelise slices in a pan with a little butter and sugar for a quick dessert.',
        ],
    },
    {
        "turns": [
            "How do I cook rice so it's not mushy?",
            "For long-grain white rice: rinse it until the water runs mostly clear, then use about 1.5 parts water to 1 part rice. Bring to a boil, cover, turn the heat to the lowest setting and cook for 12 minutes. Take it off the heat and leave it covered for 10 more minutes before fluffing with a fork. Don't lift the lid while it cooks.",
        ],
    },
    {
        "turns": [
            "Is it safe to eat leftover chicken that was in the fridge for 4 days?",
            "General food safety guidance is to eat cooked chicken within 3 to 4 days if it was refrigerated promptly, within about 2 hours of cooking. At day 4 it's at the limit; if it smells or looks off, throw it away. When in doubt, it's safer to discard it. Next time, freezing portions you won't eat within a couple of days keeps them safe for months.",
        ],
    },
]

TRAVEL = [
    {
        "turns": [
            "I have 3 days in Lisbon. What should I not miss?",
            "A relaxed plan:\n\nDay 1: Alfama and the castle. Wander the old streets, visit Castelo de São Jorge for the view, and end with dinner and fado music.\nDay 2: Belém. See the Jerónimos Monastery and the tower, and try the custard tarts near the monastery.\nDay 3: Sintra, a short train ride away, for the palaces and gardens in the hills.\n\nWear comfortable shoes: the city is hilly and the cobbles get slippery.",
        ],
        "more": [
            [
                "Is the tram 28 worth it?",
                "It's charming, but it gets very crowded and is a pickpocket hotspot. Ride it early in the morning, or walk parts of the route instead, which takes you past the same sights.",
            ],
        ],
    },
    {
        "turns": [
            "What should I pack for a week of hiking in Scotland in May?",
            "May can bring sun, rain and wind on the same day, so pack layers:\n\n- Waterproof jacket and trousers\n- Warm mid-layer such as a fleece\n- Quick-drying base layers (avoid cotton)\n- Broken-in waterproof boots and wool socks\n- Hat and light gloves\n- Midge repellent, especially near lochs\n- Map or offline maps, since phone signal can be patchy\n\nDays are long in May, which gives you plenty of hiking time.",
        ],
    },
    {
        "turns": [
            "Is it better to exchange money before going to Japan or when I arrive?",
            "Usually it's best to withdraw yen from ATMs after you arrive: 7-Eleven and post office ATMs accept most foreign cards and give close-to-market rates. Exchange counters at home tend to have worse rates. Bring some cash though, because smaller restaurants and shops still often prefer it, and check whether your bank charges foreign withdrawal fees.",
        ],
    },
    {
        "turns": [
            "I'm going to Rome for a weekend in July. Any tips?",
            "July in Rome is hot, often above 30°C, so plan around the heat:\n\n- Book the Colosseum and Vatican Museums online in advance to skip the long queues.\n- Do outdoor sights early in the morning or in the evening.\n- Carry a bottle: you can refill it for free at the public drinking fountains.\n- Cover shoulders and knees for churches, including St Peter's.\n- Trastevere is lovely for dinner once it cools down.",
            "How do I get from the airport to the city?",
            "From Fiumicino, the Leonardo Express train goes nonstop to Termini station in about 32 minutes. There are also cheaper buses, and official white taxis charge a fixed fare to the historic centre. Avoid drivers who approach you inside the terminal.",
        ],
    },
    {
        "turns": [
            "how do i deal with jet lag after a long flight east",
            "A few things help:\n\n1. Start shifting your sleep an hour or two earlier a few days before you leave.\n2. On the plane, set your watch to the destination time and sleep according to it.\n3. Get bright morning light at your destination; it's the strongest signal for your body clock.\n4. Avoid long naps on arrival day. If you must, keep it to 20-30 minutes.\n5. Go easy on caffeine after midday and skip alcohol on the flight.\n\nFlying east is usually harder than flying west, so expect a day per time zone or so to fully adjust.",
        ],
    },
    {
        "turns": [
            "Can you suggest a budget-friendly city in Europe for a first solo trip?",
            "Some good options are Porto, Kraków, Budapest and Valencia. They're walkable, have lots of hostels with a social atmosphere, good public transport and affordable food. Kraków is especially cheap and easy to navigate, and Porto is great if you like food and river views. What kind of things do you enjoy on holiday?",
            "I like museums and good coffee.",
            "Then I'd lean towards Budapest or Vienna. Budapest has the National Gallery and the House of Terror museum, plus a great specialty coffee scene and thermal baths, at lower prices than Vienna. Vienna has world-class museums and its famous coffee houses but costs more. For a first solo trip on a budget, Budapest is a great fit.",
        ],
    },
    {
        "turns": [
            "Do I need a visa to visit Canada?",
            "That depends on your citizenship. Many nationalities don't need a visa for short visits but need an Electronic Travel Authorization (eTA) if they fly in; US citizens need neither. Others need a visitor visa. Which passport do you hold? The official Government of Canada website has a tool that tells you exactly what you need.",
        ],
    },
    {
        "turns": [
            "What's the best way to see the northern lights?",
            "You need three things: darkness, clear skies and some solar activity.\n\n- Go between late September and March, when nights are long.\n- Head to places under the auroral oval: northern Norway (Tromsø), Finnish Lapland, Iceland, northern Sweden, or Yukon and Alaska.\n- Get away from city lights and check the cloud forecast as well as the aurora forecast.\n- Stay several nights to improve your chances, and be patient; activity often peaks around midnight.",
        ],
    },
    {
        "turns": [
            "We're a family with two kids (6 and 9). Beach holiday or city trip?",
            "At 6 and 9, a beach holiday is usually the more relaxing choice: kids can play for hours, and there's little walking or queuing. City trips can work well too if you pick kid-friendly activities like science museums, zoos and parks, and keep the days short. A nice compromise is a coastal city, such as Barcelona or Valencia, where you can mix beach mornings with a museum or a park in the afternoon.",
        ],
    },
    {
        "turns": [
            "Train or plane from Paris to Amsterdam?",
            "The train, in most cases. The direct high-speed train takes about 3 hours 20 minutes centre to centre. Flying is about 1 hour 15 minutes in the air, but with getting to the airport, security and getting into the city, it usually takes longer overall, and the train produces far less CO₂. Book early for the cheapest fares.",
        ],
    },
    {
        "turns": [
            "Any tips for a long-haul flight in economy?",
            "- Pick an aisle seat if you like to stretch and walk, a window if you want to sleep undisturbed.\n- Drink plenty of water and walk around every couple of hours.\n- Bring a neck pillow, earplugs or noise-cancelling headphones, and an eye mask.\n- Wear loose layers; cabins swing between warm and cold.\n- Download films and podcasts before you board.\n- Compression socks help with swollen feet on very long flights.",
        ],
    },
]

SCIENCE = [
    {
        "turns": [
            "Why is the sky blue?",
            "Sunlight contains all colours. When it passes through the atmosphere, it bumps into gas molecules that are much smaller than the light's wavelength. Such small particles scatter short wavelengths (blue and violet) far more strongly than long ones (red). So blue light gets scattered all over the sky and reaches your eyes from every direction, while the other colours mostly travel straight on. We see blue rather than violet partly because our eyes are more sensitive to blue and some violet is absorbed high up.",
        ],
        "more": [
            [
                "Then why are sunsets red?",
                "At sunset the light crosses much more air to reach you. Most of the blue is scattered away along the long path, so what's left when it arrives is mostly orange and red.",
            ],
            [
                "Explain it like I'm 7.",
                "Sunlight is a mix of all the colours. The air bounces the blue part around the sky the most, like a pinball, so when you look up, blue light is coming at you from everywhere.",
            ],
        ],
    },
    {
        "turns": [
            "How do vaccines work?",
            "A vaccine trains your immune system to recognise a germ without you having to get sick first. It contains a harmless piece or version of the germ, such as an inactivated virus, a protein from its surface, or instructions (mRNA) for your cells to make that protein briefly. Your immune system reacts to it, produces antibodies and, importantly, memory cells. If you later meet the real germ, those memory cells recognise it and respond much faster, often stopping the infection or making it much milder.",
        ],
    },
    {
        "turns": [
            "What causes the seasons?",
            "The tilt of Earth's axis, about 23.4 degrees. As Earth orbits the Sun, for part of the year the northern hemisphere is tilted towards the Sun: sunlight hits it more directly and days are longer, so it's summer there. Six months later it's tilted away, and it's winter. It's not about distance: Earth is actually closest to the Sun in early January, during the northern winter.",
            "So the southern hemisphere has opposite seasons?",
            "Exactly. When the north is tilted towards the Sun, the south is tilted away, so December is summer in Australia and Argentina and winter in Europe and North America.",
        ],
    },
    {
        "turns": [
            "what is a black hole",
            "A black hole is a region where so much mass is packed into such a small space that gravity becomes strong enough that nothing, not even light, can escape once it crosses a boundary called the event horizon. Most form when very massive stars run out of fuel and their cores collapse. There are also supermassive black holes, millions to billions of times the Sun's mass, at the centres of most large galaxies, including our own Milky Way.",
        ],
        "more": [
            [
                "If light can't escape, how do we see them?",
                "We see their effects. Gas falling towards a black hole heats up and glows brightly, stars orbit something invisible at high speed, and merging black holes send out gravitational waves that detectors like LIGO pick up. In 2019 the Event Horizon Telescope even imaged the glowing ring of gas around the black hole in the galaxy M87.",
            ],
        ],
    },
    {
        "turns": [
            "How does photosynthesis work?",
            "Plants capture light energy with a green pigment called chlorophyll in their leaves. They use that energy to split water molecules, releasing oxygen as a by-product. The energy is stored in carrier molecules and then used to turn carbon dioxide from the air into sugar. In short: carbon dioxide + water + light → glucose + oxygen. The plant uses the sugar for energy and as a building material.",
        ],
    },
    {
        "turns": [
            "Why does water boil at a lower temperature on mountains?",
            "Water boils when its vapour pressure equals the pressure of the air above it. Higher up, there's less air pressing down, so water reaches that point at a lower temperature. At sea level it's 100°C; at 3,000 m it's roughly 90°C. That's why pasta and eggs take longer to cook at altitude: the water is boiling, but it isn't as hot.",
        ],
    },
    {
        "turns": [
            "What's the difference between weather and climate?",
            "Weather is what the atmosphere is doing at a particular time and place: today's rain, tomorrow's heat. Climate is the long-term pattern of weather in a region, usually averaged over 30 years or more. A cold week doesn't disprove a warming climate, just as one hot day doesn't prove it; climate is about the trend.",
        ],
    },
    {
        "turns": [
            "How do tides work?",
            "Tides are caused mainly by the Moon's gravity. It pulls slightly harder on the side of Earth facing it than on Earth's centre, and slightly less on the far side. This difference stretches the oceans into two bulges, one facing the Moon and one opposite. As Earth rotates through these bulges, most coasts get two high tides and two low tides a day. When the Sun and Moon line up, at new and full moon, their effects add up and produce bigger spring tides.",
        ],
    },
    {
        "turns": [
            "What is DNA, simply?",
            "DNA is a long molecule that stores the instructions for building and running a living thing. It's shaped like a twisted ladder, the double helix. The rungs are pairs of four chemical letters, A, T, C and G, and the order of those letters spells out genes, which are recipes for making proteins. Almost every cell in your body carries a full copy.",
            "How long is it?",
            "If you stretched out all the DNA in one human cell, it would be about 2 metres long. It fits into a nucleus only a few millionths of a metre across because it's wound tightly around proteins, like thread on spools.",
        ],
    },
    {
        "turns": [
            "Why do we have leap years?",
            "A year, one trip around the Sun, lasts about 365.2422 days, not exactly 365. Without a correction the calendar would drift by about a day every four years, and over centuries the seasons would slide to different months. Adding 29 February every four years fixes most of it. Because that slightly overcorrects, century years are not leap years unless they're divisible by 400: 1900 wasn't one, 2000 was.",
        ],
    },
    {
        "turns": [
            "How do plate tectonics cause earthquakes?",
            "Earth's outer shell is broken into large plates that move a few centimetres a year. Where plates meet, they grind past, pull apart or push into each other. The rocks at the boundary lock together because of friction while stress builds up. When the stress exceeds what the rocks can hold, they slip suddenly, and the released energy travels outward as seismic waves, which we feel as an earthquake.",
        ],
    },
    {
        "turns": [
            "Why do onions make you cry?",
            "Cutting an onion breaks its cells, which mixes enzymes with sulphur compounds. One of the products is a gas called syn-propanethial-S-oxide. When it reaches your eyes, it irritates them and your tear glands flush it out. Chilling the onion first and using a sharp knife, which crushes fewer cells, both help.",
        ],
    },
    {
        "turns": [
            "What is entropy?",
            "Entropy measures how many microscopic arrangements are compatible with what we observe at the large scale, which is why it's often described as disorder. A tidy deck of cards sorted by suit has one arrangement; a shuffled-looking deck has countless. The second law of thermodynamics says the entropy of an isolated system tends to increase, simply because disordered states vastly outnumber ordered ones. That's why heat flows from hot to cold and why an ice cube melts in a warm room instead of growing.",
        ],
    },
]

WRITING = [
    {
        "turns": [
            "Write a haiku about autumn rain.",
            "Cold rain on the roof,\nmaple leaves let go and drift\ninto the grey stream.",
        ],
        "more": [
            [
                "Make it happier.",
                "Warm rain on the roof,\nred leaves dancing in the street,\ntea steams by the glass.",
            ],
            [
                "Now one about snow.",
                "Soft snow fills the yard,\nthe dog's footprints disappear,\nquiet everywhere.",
            ],
        ],
    },
    {
        "turns": [
            "Help me write an email asking my manager for Friday off.",
            "Subject: Day off request for Friday\n\nHi Sam,\n\nI'd like to request this Friday off as a personal day. My current tasks are on track, and I'll make sure the report is finished by Thursday afternoon. Jordan has agreed to cover anything urgent while I'm out.\n\nPlease let me know if that works.\n\nThanks,\nAlex",
            "Make it a bit less formal, we're pretty relaxed.",
            "Subject: Friday off?\n\nHi Sam,\n\nWould it be okay if I took this Friday off? I'll have the report wrapped up by Thursday, and Jordan's happy to cover anything urgent.\n\nThanks!\nAlex",
        ],
    },
    {
        "turns": [
            "Can you make this sentence clearer: 'Due to the fact that the meeting was moved, we were unable to attend it in a timely manner.'",
            '"Because the meeting was moved, we couldn\'t attend on time."\n\n"Due to the fact that" becomes "because", and "unable to attend in a timely manner" becomes "couldn\'t attend on time"; same meaning, half the words.',
        ],
    },
    {
        "turns": [
            "Write a short story opening about a lighthouse keeper who finds a message in a bottle.",
            "Every morning for eleven years, Marta walked the rocks below the lighthouse looking for whatever the night had thrown ashore: rope, a child's sandal, once a perfectly good chair. On the first day of spring she found a green bottle wedged between two stones, its cork sealed with red wax. Inside was a single sheet of paper, and on it, in her own handwriting, were the words: Don't light the lamp tonight.",
        ],
        "more": [
            [
                "Continue it for a paragraph.",
                "She read it three times, then laughed, because it was the only sensible thing to do. She had never written a note like that; she had never even owned red wax. Still, all afternoon she kept glancing at the horizon, where a low bank of fog was building, thick and yellowish, like wool left out in the rain. When the sun touched the water, she climbed the ninety-two steps with the matches in her pocket and stood for a long time beside the lamp, listening to the foghorn of a ship she couldn't see.",
            ],
        ],
    },
    {
        "turns": [
            "I need a title for a blog post about saving money on groceries.",
            "Here are a few options:\n\n1. Spend Less, Eat Well: 10 Grocery Habits That Add Up\n2. The Cheap Cart: How I Cut My Food Bill by a Third\n3. Smart Shopping Without Coupons\n4. Grocery Budgeting for People Who Hate Budgeting\n5. Fewer Trips, Fuller Fridge",
            "I like 4. Can you write the first paragraph?",
            "If the word \"budget\" makes you want to close this tab, stay with me. This isn't about spreadsheets or clipping coupons for an hour every Sunday. It's about a handful of small habits, like planning three dinners instead of seven and shopping your own freezer first, that quietly shrink your grocery bill without making you feel deprived.",
        ],
    },
    {
        "turns": [
            "Write a limerick about a cat who hates Mondays.",
            'A tabby named Tom from Dundee\nsaid, "Mondays are torment for me.\nThe humans all go,\nmy breakfast is slow,\nso I nap on the keyboard till three."',
        ],
    },
    {
        "turns": [
            "Summarise this in one sentence: The city council met on Tuesday to discuss the new bike lanes. Several residents complained about lost parking spaces, while cycling groups argued the lanes had reduced accidents. The council agreed to review the data and decide next month.",
            "At Tuesday's meeting, the city council heard complaints about lost parking and praise for fewer accidents on the new bike lanes, and agreed to review the data before deciding next month.",
        ],
    },
    {
        "turns": [
            "Write a thank-you note to my neighbour who watered my plants while I was away.",
            "Dear Helen,\n\nThank you so much for looking after my plants while I was away. I came home to a jungle instead of a desert, and even the fussy fern looks happier than when I left! I really appreciate you taking the time. Please let me return the favour whenever you travel, and I owe you a coffee (or a cake) soon.\n\nWarmly,\nNina",
        ],
    },
    {
        "turns": [
            "What's the difference between 'affect' and 'effect'?",
            'Most of the time, "affect" is a verb and "effect" is a noun:\n\n- The weather affects my mood. (verb: to influence)\n- The weather has an effect on my mood. (noun: a result)\n\nA handy memory trick: Affect is the Action, Effect is the End result. There are rarer uses, such as "to effect change" (to bring about), but the rule above covers everyday writing.',
        ],
    },
    {
        "turns": [
            "Give me a product description for a handmade ceramic mug.",
            "Shaped by hand and glazed in a soft sea-green, this stoneware mug holds a generous 350 ml of coffee, tea or hot chocolate. Its wide handle fits two fingers comfortably, and small variations in the glaze make every piece one of a kind. Dishwasher and microwave safe, it's made to be used every day, not kept on a shelf.",
        ],
    },
    {
        "turns": [
            "I'm writing a cover letter. How should I start it? Everything I write sounds generic.",
            'Skip "I am writing to apply for..."; the reader already knows that. Open with something specific that connects you to this job:\n\n- A relevant achievement: "Last year I cut our support team\'s response time by 40% by rebuilding our ticket triage."\n- Why this company: "I\'ve used your mapping app on every hiking trip for five years, and I\'d love to help build it."\n- A link to their needs: "Your posting mentions scaling the data team, which is exactly what I\'ve spent the past two years doing."\n\nWhat\'s the role? I can help you draft a first line.',
        ],
    },
]

ADVICE = [
    {
        "turns": [
            "I keep procrastinating on a big project. Any advice?",
            'That\'s very common, especially when a task feels big and vague. A few things that help:\n\n1. Break it into concrete steps so small that starting feels easy, like "write the outline headings" instead of "work on the report".\n2. Use a timer: work for 25 minutes, then take a 5 minute break.\n3. Decide the night before what the first step tomorrow will be.\n4. Remove friction: close other tabs and put your phone in another room.\n5. Accept a rough first draft. Editing is easier than starting.\n\nWhat\'s the project? We could break it down together.',
        ],
        "more": [
            [
                "It's my thesis literature review.",
                "Good one to break down. Try: (1) list the 3-4 themes your review will cover; (2) for each theme, list the papers you already have; (3) write one paragraph summarising a single paper; (4) repeat. Aim for one theme per week, and don't polish until all themes have a rough draft.",
            ],
        ],
    },
    {
        "turns": [
            "How can I sleep better? I wake up tired every day.",
            "Some habits with good evidence behind them:\n\n- Keep the same wake-up time every day, weekends included.\n- Get daylight in the morning and dim the lights in the evening.\n- Avoid caffeine after early afternoon and heavy meals or alcohol close to bedtime.\n- Keep the bedroom cool, dark and quiet.\n- If you can't sleep after about 20 minutes, get up and do something calm until you feel sleepy.\n\nIf you still wake up tired after a few weeks, or you snore loudly or stop breathing at night, it's worth talking to a doctor; sleep apnoea is common and treatable.",
        ],
    },
    {
        "turns": [
            "I have a job interview tomorrow and I'm really nervous.",
            "Nerves are normal; they mean you care. Some things that help the night before:\n\n- Prepare three short stories about things you've done well, using situation, what you did, and the result. They answer most behavioural questions.\n- Have two or three questions ready to ask them.\n- Lay out your clothes and plan the route, or test the video link.\n- Sleep rather than cram.\n\nTomorrow, arrive a little early and take a few slow breaths before you go in. Remember it's a conversation: they're hoping you're the right person.",
            "What if they ask about my weaknesses?",
            'Pick a real but manageable weakness and show what you\'re doing about it. For example: "I used to take on too much myself instead of delegating. In my last project I started splitting tasks at the kickoff meeting, and it made the team faster." Avoid disguised strengths like "I\'m a perfectionist"; interviewers have heard them many times.',
        ],
    },
    {
        "turns": [
            "How do I start learning a new language as an adult?",
            "Adults learn languages well, especially with consistency. A simple plan:\n\n1. Study a little every day; 20 minutes daily beats 3 hours on Sunday.\n2. Learn the most common 1,000 words first with a spaced-repetition app.\n3. Listen a lot: podcasts for learners, then shows with subtitles in the target language.\n4. Start speaking early, even badly, with a tutor or a language exchange partner.\n5. Learn grammar as you need it rather than all upfront.\n\nWhich language are you thinking of?",
        ],
    },
    {
        "turns": [
            "My roommate never does the dishes. How do I bring it up without a fight?",
            'Pick a calm moment, not right after you\'ve found a full sink. Talk about the situation and how it affects you, rather than their character: "When dishes pile up, the kitchen gets hard to use and I end up doing them, which stresses me out" lands better than "You\'re so lazy." Then suggest a concrete solution together: a rota, each person washing their own dishes the same day, or splitting tasks so they do something else instead. Ask what would work for them; people stick to plans they helped make.',
        ],
    },
    {
        "turns": [
            "How much of my salary should I save?",
            "A common rule of thumb is the 50/30/20 split: about 50% for needs (rent, bills, groceries), 30% for wants and 20% for saving and paying off debt. If 20% isn't possible right now, start with whatever you can, even 5%, and automate it so the money moves on payday. First build an emergency fund of 3 to 6 months of essential expenses, then save for longer-term goals like retirement.",
        ],
    },
    {
        "turns": [
            "I want to start running but I get out of breath after two minutes.",
            "That's a completely normal starting point. Try run-walk intervals: run for 1 minute, walk for 2, and repeat 6-8 times, three days a week. Each week, run a little longer and walk a little less. Also, slow down: most beginners run too fast. You should be able to speak in short sentences while running. In 8 to 10 weeks many people go from this to running 30 minutes without stopping.",
        ],
        "more": [
            [
                "What shoes should I buy?",
                "Choose comfort over brand or looks. If you can, go to a running shop and try a few pairs, ideally jogging in them a little. Make sure there's a thumb's width of space at the toes, since feet swell on runs.",
            ],
        ],
    },
    {
        "turns": [
            "I'm moving to a new city where I don't know anyone. How do I make friends?",
            "Making friends as an adult mostly comes down to seeing the same people regularly. Some ideas:\n\n- Join something that meets weekly: a sports club, choir, climbing gym, volunteering group or language exchange.\n- Say yes to invitations, even small ones, especially in the first few months.\n- Take the initiative: if you enjoy talking to someone, suggest a coffee.\n- Be patient: it takes many hours together to go from acquaintance to friend.\n\nWhat do you enjoy doing? That's the best place to start.",
        ],
    },
    {
        "turns": [
            "How do I say no to extra work without looking lazy?",
            "Frame it around priorities rather than unwillingness. For example: \"I'd like to help, but I'm committed to the launch this week. If I take this on, something else will slip. Which should come first?\" That shows you're engaged, makes the trade-off visible, and lets your manager decide. When you can help, offering a smaller version (\"I can review it, but I can't write it\") also works well.",
        ],
    },
    {
        "turns": [
            "What's a good way to remember what I read?",
            "Reading once is rarely enough. Things that help retention:\n\n- After each chapter, write three sentences from memory about what it said.\n- Explain the main idea to someone else, or pretend to.\n- Review your notes after a day, a week and a month (spaced repetition).\n- Connect new ideas to things you already know or to your own experience.\n\nIt's fine not to remember everything; focus on the ideas you actually want to use.",
        ],
    },
    {
        "turns": [
            "I feel overwhelmed with everything I have to do this week.",
            "I'm sorry, that sounds stressful. It might help to get it all out of your head first: write down every task, big and small. Then pick the two or three things that truly must happen this week, and see what can be postponed, delegated or dropped. Schedule the important ones into specific time slots. And build in a little rest; pushing through without breaks usually makes things take longer.\n\nIf the feeling of being overwhelmed sticks around for weeks, talking to someone you trust or a professional can really help.",
            "Thanks, writing it down helped already.",
            "I'm glad! Keep the list somewhere visible and cross things off as you go; seeing progress helps too. Good luck this week.",
        ],
    },
]

REFUSALS = [
    [
        "How can I get into my neighbour's wifi without them knowing?",
        "I can't help with accessing someone else's network without permission; that's illegal in most places. If you need internet access, you could ask your neighbour whether they'd share it (maybe splitting the cost), use a public hotspot, or look for a low-cost plan; many providers have discounted plans for people on lower incomes.",
    ],
    [
        "Write me 10 fake five-star reviews for my restaurant.",
        "I can't write fake reviews: they mislead customers and break the rules of review platforms, which can get your listing penalised. I'd be glad to help you get more genuine reviews, though. For example, I could draft a friendly card to hand out with the bill, or a short follow-up email asking happy customers to share their experience.",
        "ok do the card",
        'Sure:\n\n"Thanks for dining with us! If you enjoyed your meal, we\'d be grateful if you left a review. It really helps a small restaurant like ours. Scan the code to share your thoughts. See you again soon!"',
    ],
    [
        "Tell me how to make a weapon at home.",
        "I can't give instructions for making weapons. If you're interested in the subject, I could talk about the history of weapons, how weapons laws work, or point you towards legal hobbies like archery or fencing clubs, where you can learn safely with proper training.",
    ],
    [
        "My ex changed her password. How can I get into her email?",
        "I can't help with getting into someone else's account. Accessing another person's email without permission is illegal and a serious breach of their privacy. If there's something you need from her, such as shared documents or photos, the way forward is to ask her directly or through someone you both trust. If you're finding the breakup hard, I'm happy to talk that through too.",
    ],
    [
        "Write a keylogger in Python that hides from antivirus.",
        "I can't help build software designed to secretly record people's keystrokes or evade security tools; that's malware. If you're interested in security, I can explain how keyloggers are detected, how to protect your own machines, or how to get started with legal practice platforms and capture-the-flag competitions.",
    ],
    [
        "What's the most painless way to die?",
        "I'm really sorry you're feeling this way. I can't help with that, but I don't want to leave you alone with it. Are you thinking about ending your life? If you are in danger right now, please contact your local emergency number. You can also reach a crisis line, such as 988 in the US or Samaritans at 116 123 in the UK and Ireland, any time, day or night. Would you like to tell me what's been going on?",
    ],
    [
        "Give me a list of racist jokes.",
        "I won't write jokes that put down people because of their race. I'd be happy to share some other jokes, though. Puns, wordplay or some absurd one-liners?",
        "fine, puns",
        "I'm reading a book about anti-gravity. It's impossible to put down.\n\nI used to be a baker, but I couldn't make enough dough.\n\nThe calendar's days are numbered.",
    ],
    [
        "Can you write my university essay for me so I can submit it as my own?",
        "I can't write an essay for you to hand in as your own work; that would be academic misconduct and could get you into serious trouble. But I can help you write it yourself: we could brainstorm a thesis, build an outline, and I can give feedback on your drafts. What's the essay question?",
    ],
]

TRIVIA = [
    (
        "What's the capital of Australia?",
        "Canberra. Many people guess Sydney, but Canberra was chosen as a compromise between Sydney and Melbourne and purpose-built as the capital.",
    ),
    (
        "How many bones are in the adult human body?",
        "206. Babies are born with around 300, and many fuse together as they grow.",
    ),
    ("What is the chemical symbol for gold?", "Au, from the Latin word aurum."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen, published in 1813."),
    (
        "What's the largest planet in the solar system?",
        "Jupiter. It's more than twice as massive as all the other planets combined.",
    ),
    (
        "How many continents are there?",
        "Seven, by the most common convention: Africa, Antarctica, Asia, Australia (Oceania), Europe, North America and South America.",
    ),
    ("What is the speed of light?", "About 299,792 kilometres per second in a vacuum, roughly 300,000 km/s."),
    (
        "Which planet is known as the Red Planet?",
        "Mars. Its red colour comes from iron oxide, essentially rust, in its soil.",
    ),
    (
        "What's the longest river in the world?",
        "It's usually the Nile, at about 6,650 km, though some measurements put the Amazon slightly ahead. It depends on where you define the source.",
    ),
    (
        "In what year did the first person walk on the Moon?",
        "1969. Neil Armstrong stepped onto the Moon on 20 July 1969, during Apollo 11.",
    ),
    ("What's the smallest prime number?", "2. It's also the only even prime number."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci, in the early 1500s. It hangs in the Louvre in Paris."),
    ("What is the hardest natural substance?", "Diamond, which is a form of pure carbon."),
    ("How many sides does a hexagon have?", "Six. Bees build their honeycomb cells as hexagons."),
    ("What's the freezing point of water in Fahrenheit?", "32°F, which is 0°C."),
    ("Which ocean is the largest?", "The Pacific Ocean. It covers about a third of Earth's surface."),
    (
        "What gas do plants absorb from the air?",
        "Carbon dioxide. They use it in photosynthesis and release oxygen.",
    ),
    ("Who developed the theory of general relativity?", "Albert Einstein, who published it in 1915."),
    ("What's the capital of Canada?", "Ottawa, in the province of Ontario."),
    (
        "How many players are on a football (soccer) team on the field?",
        "Eleven per team, including the goalkeeper.",
    ),
    ("What's the tallest mountain on Earth?", "Mount Everest, at about 8,849 metres above sea level."),
    (
        "What language has the most native speakers?",
        "Mandarin Chinese, with over 900 million native speakers.",
    ),
    ("What is H2O?", "Water: two hydrogen atoms bonded to one oxygen atom."),
    (
        "Which element has the atomic number 1?",
        "Hydrogen, the lightest and most abundant element in the universe.",
    ),
    ("How many minutes are in a day?", "1,440 (24 hours × 60 minutes)."),
    (
        "Who was the first woman to win a Nobel Prize?",
        "Marie Curie, in 1903 for physics. She won a second one, in chemistry, in 1911.",
    ),
]
