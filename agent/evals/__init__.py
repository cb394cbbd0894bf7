"""Long-context evaluations: passkey, BABILong-style bAbI qa1-qa5 and RULER-style needles.

`generators` builds samples, `methods` answers them (the memory engine and three baselines on the
same model), `scoring` grades answers, `runner` runs a task into JSON and a plot, and `report`
regenerates a results markdown (this repository keeps its own in `bench/RESULTS.md`) from the JSON files.
"""
