"""Classroom exercises: student copies with stubs and hints (exercises.py), and their grader
(grading.py, which runs worker.py in a fresh interpreter on the student's package)."""
