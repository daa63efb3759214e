"""Executors: where the commands of a study run (this machine, or a cluster through SLURM).

The study runner turns every step (pretraining, training, prediction, analysis) into a
`CommandJob` and hands it to an `Executor`, made by `kinds.make_executor`:

    executor = make_executor("local", jobs=2, folder=study_folder + "/executor")
    handle = executor.submit(job)         # a JSON-serialisable record; the runner stores it
    executor.status(handle)               # JobStatus("running" | "succeeded" | "failed" | "lost")

The modules, one idea each:

- `base`: the job, its status and the executor interface; how a job's end is known from its
  exit file and its process, also by a runner started after the one that submitted it;
- `run_job`: the wrapper every command runs through (run by its file path), which writes that
  exit file;
- `sharing`: how the jobs share this machine's cores and GPUs (thread counts, GPU slots,
  nnU-Net's augmentation workers);
- `local`: the "local" executor, processes of this machine;
- `slurm`: the options of SLURM jobs and the job states of sacct;
- `job_processes`: every process of a job, found and stopped by whoever cancels it;
- `submitit_executor`: what the executors through submitit share, `submitit_slurm` the
  "slurm" one and `submitit_local` the "submitit-local" one;
- `kinds`: the kinds a study names and `make_executor`.
"""
