"""mmaccel.eval"""
