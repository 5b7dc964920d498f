"""mmaccel.models"""
