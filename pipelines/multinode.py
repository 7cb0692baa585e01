"""SRPO training on several nodes: a command step on ``pod_count`` pods, then its result as an artifact.

    zenml pipeline run pipelines.multinode.srpo_multinode --config configs/kubeflow_multinode_flux_hps.yaml --stack srpo-kubeflow

``prepare_prompts`` -> ``generate_rollouts`` -> ``write_multinode_job`` (the job onto the shared
volume ``work_dir``) -> ``train_multinode`` (:data:`train_multinode`, a ``zenml.CommandStep``: the
Kubernetes step operator runs it on ``pod_count`` pods as an Indexed Job; each pod runs
``python -m ops.multinode``, which starts ``torchrun`` with the pod's place) ->
``register_multinode_result`` (copies ``work_dir/out`` into the artifact store and registers it as
``tuned_transformer``). A command step has no inputs or outputs, so the pipeline hands it
``work_dir`` and the processes per pod through the step's environment.
"""

from zenml import Model

from ops.pipeline import pipeline
from ops.preflight import check_artifact_store
from srpo.config import PolicyConfig, RolloutConfig, TrainConfig
from srpo.prompts import PromptConfig
from srpo.rewards import RewardConfig
from srpo.training import multinode
from srpo.training.job import TrainingJob
from steps import generate_rollouts, prepare_prompts, register_multinode_result, train_multinode, write_multinode_job


@pipeline(model=Model(name="srpo", description="Transformers tuned with SRPO / Direct-Align", tags=["srpo"]))
def srpo_multinode(
    prompts: PromptConfig,
    reward: RewardConfig,
    work_dir: str,
    policy: PolicyConfig = PolicyConfig(),
    rollouts: RolloutConfig = RolloutConfig(),
    train: TrainConfig = TrainConfig(),
    nproc_per_node: int = 1,
) -> None:
    """``work_dir``: a folder every pod mounts at the same path (job, checkpoints, result)."""
    check_artifact_store()
    TrainingJob(policy=policy, reward=reward, rollout=rollouts, train=train).validate_run()  # the run's one validation
    multinode.check_world(train, None, nproc_per_node)  # the plan's FSDP world: num_nodes x num_processes
    train_prompts, _ = prepare_prompts(config=prompts)
    rollout_set = generate_rollouts(train_prompts=train_prompts, policy=policy, rollouts=rollouts)
    job = write_multinode_job(rollouts=rollout_set, policy=policy, reward=reward, rollout=rollouts, train=train,
                              work_dir=work_dir)
    environment = {multinode.WORK_DIR: work_dir, multinode.NPROC_PER_NODE: str(nproc_per_node)}
    train_multinode.with_options(environment=environment)(after=job)
    register_multinode_result(work_dir=work_dir, after="train_multinode")
