"""Generated tasks: data that minilm makes itself, deterministically, with no downloads.

numbers.py   English number words <-> Chinese numerals (§6.1 machine translation)
compare.py   "17>9" true or false? (a GLUE-style classification task, §7)
"""
