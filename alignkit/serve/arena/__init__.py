"""The arena: people compare two anonymous answers; their votes become a leaderboard and training data.

    store.py     battles and votes in SQLite (WAL, synchronous=FULL, one vote per battle)
    engine.py    the models behind it: batched, streamed answers with each model's chat template
    app.py       the web page and the JSON API (Starlette on uvicorn)
    ratings.py   Bradley-Terry ratings with ties, bootstrap intervals, the win-rate matrix
    export.py    votes → record-schema JSONL for `alignkit rm` and `alignkit dpo`
    simulate.py  the built-in world's labellers as voters, through the HTTP API
"""
