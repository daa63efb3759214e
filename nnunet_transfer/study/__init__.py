"""Studies: one file describes a transfer-learning study, one command runs it and reports on it.

The modules, in the order a study goes through them:

- `study_file` reads and checks the study file (YAML, every mistake with its line through
  `yaml_lines`, single values through the rules of `value_rules` and the study's own kinds of
  value in `value_checks`) into a `spec.StudySpec`, which holds the
  datasets, the `Strategy` objects, the architectures and the trainings' budget;
- `grid` expands the spec into pretrainings and runs, with their keys and folders;
- `setup` makes the datasets, plans and preprocesses, writes the splits and the test folder;
- `jobs` turns every step into a command and says what it needs and what it leaves;
- `executors` (a package) runs the commands, here or through SLURM; `state` keeps what the
  runner knows about each job; `runner` drives the loop and resumes after a crash;
- `results` gathers the tables and analyses into the report (laid out by the ground-floor
  `document` builder);
- `commands` and `demo` are the `study` and `demo` commands of the CLI.
"""
