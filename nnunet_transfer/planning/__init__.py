"""Plans for transfer, between the data and the training: the source's plans on a target
(`transfer`), small plans for CPUs (`small_plans`), the extra architectures as configurations
(`architecture_configurations`), all on nnU-Net's plans files (`plans_files`); `commands` adds
`plans-transfer`, `small-plans` and `add-architectures` to the CLI.

Import the modules directly; nnU-Net's planning code is imported on first use only.
"""
