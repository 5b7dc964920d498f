"""mmaccel.ops"""
