"""Training code, outside the engine's read and write path: the address head (`address`), the LM2 memory's
tasks and trainer (`lm2_tasks`, `lm2_trainer`) and the sample data they and the evaluations share (`data`)."""
