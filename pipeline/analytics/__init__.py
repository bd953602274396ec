"""Analytics over one run: pure functions that return data.

Each module covers one kind of question (``stars``, ``embedding``, ``words``, ``attention``,
``time``, ``league``). Their functions take DataFrames in the schemas of docs/architecture.md and
return DataFrames or dicts, so the HTML reports and the Streamlit app draw the same numbers. The
run itself is read by :class:`pipeline.Run`.
"""
