from m6rec.data.behaviour_log import BehaviourLogDataModule

__all__ = ["BehaviourLogDataModule"]
